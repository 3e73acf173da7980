"""CNN xconfig layers (Kaldi's `xconfig/convolution.py`: XconfigConvLayer, XconfigResBlock,
ChannelAverageLayer; docs/kaldi-formats.md 5.14). Every line goes to ref.config and
final.config; the component math is docs/kaldi-formats.md 4.23.

`<ops>-layer` (e.g. conv-relu-batchnorm-layer) chains one component per operation, in the
order its name gives: conv (TimeHeightConvolutionComponent), relu (RectifiedLinear with
block-dim = the filters), batchnorm (BatchNorm per filter), renorm (Normalize), dropout,
so (ScaleAndOffset per filter); a trailing `noconv` marks a layer without convolution. The
image is height x filters, filters varying fastest.
"""
from __future__ import annotations

from .layer import XconfigLayer, pass_through, ref_and_final

# Kaldi's xconfig/parser.py names for XconfigConvLayer.
CONV_LAYER_TYPES = (
    "relu-conv-layer", "conv-layer", "conv-relu-layer", "conv-renorm-layer", "relu-conv-renorm-layer",
    "batchnorm-conv-layer", "conv-relu-renorm-layer", "batchnorm-conv-relu-layer", "relu-batchnorm-conv-layer",
    "relu-batchnorm-noconv-layer", "relu-noconv-layer", "conv-relu-batchnorm-layer",
    "conv-relu-batchnorm-so-layer", "conv-relu-batchnorm-dropout-layer", "conv-relu-dropout-layer")
# The convolution options the layers pass through when set, in Kaldi's order (XconfigConvLayer
# passes the geometry too).
CONV_OPTIONS = ("param-stddev", "bias-stddev", "use-natural-gradient", "max-change", "rank-in", "rank-out",
                "num-minibatches-history", "alpha-in", "alpha-out")
CONV_LAYER_OPTIONS = CONV_OPTIONS + (
    "num-filters-in", "num-filters-out", "height-in", "height-out", "height-subsample-out", "height-offsets",
    "time-offsets", "required-time-offsets", "learning-rate-factor", "l2-regularize")


def _offsets_ok(text: str) -> bool:
    """Kaldi's check_offsets_var: comma-separated integers, strictly increasing."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        return False
    return all(a < b for a, b in zip(values, values[1:]))


def _relu(name: str, dim, block_dim, scale, threshold) -> str:
    return (f"component name={name} type=RectifiedLinearComponent dim={dim} block-dim={block_dim} "
            f"self-repair-scale={scale} self-repair-lower-threshold={threshold}")


def _batchnorm(name: str, dim, block_dim) -> str:
    # (two spaces before type=: Kaldi's text)
    return f"component name={name}  type=BatchNormComponent dim={dim} block-dim={block_dim}"


def _node(name: str, descriptor: str) -> str:
    return f"component-node name={name} component={name} input={descriptor}"


class ConvLayer(XconfigLayer):
    layer_types = CONV_LAYER_TYPES

    def defaults(self):
        return {"input": "[-1]", "height-in": -1, "height-subsample-out": 1, "height-out": -1,
                "height-offsets": "", "num-filters-out": -1, "time-offsets": "", "required-time-offsets": "",
                "target-rms": 1.0, "self-repair-scale": 2.0e-05, "self-repair-lower-threshold": 0.05,
                "param-stddev": "", "bias-stddev": "", "max-change": 0.75, "learning-rate-factor": "",
                "use-natural-gradient": "", "rank-in": "", "rank-out": "", "num-minibatches-history": "",
                "alpha-in": "", "alpha-out": "", "l2-regularize": "", "dropout-proportion": 0.5}

    @property
    def operations(self) -> list[str]:
        ops = self.layer_type.split("-")[:-1]
        return ops[:-1] if ops[-1] == "noconv" else ops

    def derive(self):
        height_in = self.config["height-in"]
        if height_in <= 0:
            raise self.error("height-in must be specified")
        if self.input.dim % height_in != 0:
            raise self.error(f"input dimension {self.input.dim} is not a multiple of height-in={height_in}")
        self.config["num-filters-in"] = self.input.dim // height_in

    def check(self):
        c = self.config
        h_in, h_out, sub = c["height-in"], c["height-out"], c["height-subsample-out"]
        if sub <= 0:
            raise self.error(f"height-subsample-out has invalid value {sub}")
        if h_out <= 0:
            raise self.error(f"height-out has invalid value {h_out}")
        if h_out * sub > h_in:
            raise self.error(f"the combination height-in={h_in}, height-out={h_out} and "
                             f"height-subsample-out={sub} does not look right (height-out too large)")
        if "noconv" not in self.layer_type.split("-"):
            for key in ("height-offsets", "time-offsets"):
                if not _offsets_ok(c[key]):
                    raise self.error(f"{key}={c[key]} is not valid")
            if c["required-time-offsets"] != "" and not _offsets_ok(c["required-time-offsets"]):
                raise self.error(f"required-time-offsets={c['required-time-offsets']} is not valid")
        if h_out * sub < h_in - len(c["height-offsets"].split(",")):
            raise self.error(f"the combination height-in={h_in}, height-out={h_out}, height-subsample-out={sub} "
                             f"and height-offsets={c['height-offsets']} does not look right (height-out too small)")
        if c["target-rms"] <= 0.0:
            raise self.error(f"target-rms={c['target-rms']} is not valid")

    def outputs(self):
        return {None: (f"{self.name}.{self.operations[-1]}",
                       self.config["num-filters-out"] * self.config["height-out"])}

    def config_lines(self):
        c, name = self.config, self.name
        filters, height = c["num-filters-in"], c["height-in"]
        descriptor = self.input.final
        lines = []
        for op in self.operations:
            node = f"{name}.{op}"
            dim = filters * height
            if op == "conv":
                lines.append(pass_through(f"component name={node} type=TimeHeightConvolutionComponent", c,
                                          CONV_LAYER_OPTIONS))
                filters, height = c["num-filters-out"], c["height-out"]
            elif op == "batchnorm":
                lines.append(f"{_batchnorm(node, dim, filters)} target-rms={c['target-rms']}")
            elif op == "renorm":
                lines.append(f"component name={node} type=NormalizeComponent dim={dim} target-rms={c['target-rms']}")
            elif op == "relu":
                lines.append(_relu(node, dim, filters, c["self-repair-scale"], c["self-repair-lower-threshold"]))
            elif op == "dropout":
                lines.append(f"component name={node} type=DropoutComponent dim={dim} "
                             f"dropout-proportion={c['dropout-proportion']}")
            else:
                assert op == "so", op
                lines.append(f"component name={node} type=ScaleAndOffsetComponent dim={dim} block-dim={filters}")
            lines.append(_node(node, descriptor))
            descriptor = node
        return ref_and_final(lines)


class ResBlock(XconfigLayer):
    """A residual block of 2 (or, with num-bottleneck-filters, 3) relu -> batchnorm -> conv units
    at a constant height; the block's output is conv + bypass, by default through a NoOp."""
    layer_types = ("res-block",)

    def defaults(self):
        return {"input": "[-1]", "height": -1, "num-filters": -1, "num-bottleneck-filters": -1,
                "time-period": 1, "height-period": 1, "self-repair-scale": 2.0e-05,
                "self-repair-lower-threshold1": 0.05, "self-repair-lower-threshold2": 0.05,
                "self-repair-lower-threshold3": 0.05, "max-change": 0.75, "allow-zero-padding": True,
                "bypass-source": "noop", "param-stddev": "", "bias-stddev": "", "use-natural-gradient": "",
                "rank-in": "", "rank-out": "", "num-minibatches-history": "", "alpha-in": "", "alpha-out": "",
                "l2-regularize": ""}

    def derive(self):
        height, filters = self.config["height"], self.config["num-filters"]
        if filters == -1:
            if self.input.dim % height != 0:
                raise self.error(f"specified image height {height} does not divide the input dim {self.input.dim}")
            # (true division: Kaldi under Python 3 then writes e.g. num-filters-in=32.0)
            self.config["num-filters"] = self.input.dim / height
        elif self.input.dim != filters * height:
            raise self.error(f"expected the input-dim to equal height={height} * num-filters={filters} = "
                             f"{height * filters}, but it is {self.input.dim}")

    def check(self):
        if self.config["bypass-source"] not in ("input", "noop", "relu", "batchnorm"):
            raise self.error(f"bypass-source must be input, noop, relu or batchnorm, "
                             f"got {self.config['bypass-source']}")

    @property
    def _last_conv(self) -> str:
        return f"{self.name}.conv{2 if self.config['num-bottleneck-filters'] <= 0 else 3}"

    def outputs(self):
        source = self.config["bypass-source"]
        if source == "noop":
            return {None: (f"{self.name}.noop", self.input.dim)}
        residual = {"input": self.input.final, "relu": f"{self.name}.relu1",
                    "batchnorm": f"{self.name}.batchnorm1"}[source]
        return {None: (f"Sum({self._last_conv}, {residual})", self.input.dim)}

    def config_lines(self):
        c, name = self.config, self.name
        bottleneck = c["num-bottleneck-filters"]
        height, filters = c["height"], c["num-filters"]
        if bottleneck <= 0:   # (height offsets, time offsets, output filters) of each conv
            units = [(f"-{c['height-period']},0,{c['height-period']}", f"-{c['time-period']},0,{c['time-period']}",
                      filters)] * 2
        else:
            units = [("0", "0", bottleneck), ("-1,0,1", f"-{c['time-period']},0,{c['time-period']}", bottleneck),
                     ("0", "0", filters)]
        required = "required-time-offsets=0" if c["allow-zero-padding"] else ""
        options = pass_through("", c, CONV_OPTIONS + ("l2-regularize",)).lstrip()
        lines, descriptor, cur = [], self.input.final, filters
        for n, (height_offsets, time_offsets, out) in enumerate(units, 1):
            dim = cur * height
            lines += [_relu(f"{name}.relu{n}", dim, cur, c["self-repair-scale"],
                            c[f"self-repair-lower-threshold{n}"]), _node(f"{name}.relu{n}", descriptor),
                      _batchnorm(f"{name}.batchnorm{n}", dim, cur), _node(f"{name}.batchnorm{n}", f"{name}.relu{n}")]
            conv = (f"height-in={height} height-out={height} height-offsets={height_offsets} "
                    f"time-offsets={time_offsets} num-filters-in={cur} num-filters-out={out} {required} {options}")
            lines += [f"component name={name}.conv{n} type=TimeHeightConvolutionComponent {conv}",
                      _node(f"{name}.conv{n}", f"{name}.batchnorm{n}")]
            descriptor, cur = f"{name}.conv{n}", out
        if c["bypass-source"] == "noop":
            lines += [f"component name={name}.noop dim={self.input.dim} type=NoOpComponent",
                      _node(f"{name}.noop", f"Sum({self.input.final}, {self._last_conv})")]
        return ref_and_final(lines)


class ChannelAverageLayer(XconfigLayer):
    """SumBlockComponent averaging the input's input-dim/dim blocks of dim (a CNN's filters
    over its heights)."""
    layer_types = ("channel-average-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1}

    def derive(self):
        pass

    def check(self):
        dim = self.config["dim"]
        if dim <= 0:
            raise self.error("dim must be specified and > 0")
        if self.input.dim % dim != 0:
            raise self.error(f"input-dim={self.input.dim} is not a multiple of dim={dim}")

    def outputs(self):
        return {None: (self.name, self.config["dim"])}

    def config_lines(self):
        dim = self.config["dim"]
        return ref_and_final([f"component name={self.name} type=SumBlockComponent input-dim={self.input.dim} "
                              f"output-dim={dim} scale={dim * 1.0 / self.input.dim}",
                              _node(self.name, self.input.final)])
