"""Input, output, affine and affine+nonlinearity layers (Kaldi's `xconfig/basic_layers.py`;
docs/kaldi-formats.md 5.5, 5.9). Line formats, including their doubled and trailing blanks,
follow Kaldi's generator character for character.
"""
from __future__ import annotations

import math

from .layer import XconfigLayer, pass_through, ref_and_final


class InputLayer(XconfigLayer):
    """`input name=input dim=40`: an input-node in all three configs."""
    layer_types = ("input",)
    has_input = False

    def defaults(self):
        return {"dim": -1}

    def derive(self):
        pass

    def check(self):
        if self.config["dim"] <= 0:
            raise self.error("dim= must be given and positive")

    def outputs(self):
        return {None: (self.name, self.config["dim"])}

    def config_lines(self):
        line = f"input-node name={self.name} dim={self.config['dim']}"
        return [(basename, line) for basename in ("init", "ref", "final")]


def _check_objective(layer: XconfigLayer) -> None:
    if layer.config["objective-type"] not in ("linear", "quadratic"):
        raise layer.error(f"objective-type={layer.config['objective-type']} must be linear "
                          "or quadratic")


def _output_node(name: str, node: str, delay: int, objective: str) -> str:
    descriptor = f"Offset({node}, {delay})" if delay != 0 else node
    return f"output-node name={name} input={descriptor} objective={objective}"


class TrivialOutputLayer(XconfigLayer):
    """`output name=output input=...`: just an output-node on a descriptor."""
    layer_types = ("output",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "objective-type": "linear", "output-delay": 0}

    def check(self):
        _check_objective(self)

    def outputs(self):
        return {None: (self.name, self.input.dim)}

    def config_lines(self):
        return [(basename, _output_node(self.name, self.input.final, self.config["output-delay"],
                                        self.config["objective-type"]))
                for basename in ("ref", "final")]


class OutputLayer(XconfigLayer):
    """`output-layer`: [bottleneck LinearComponent] + NaturalGradientAffine (zero-initialized)
    + LogSoftmax + output-node, optionally delayed by output-delay frames."""
    layer_types = ("output-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "bottleneck-dim": -1,
                "orthonormal-constraint": 1.0, "include-log-softmax": True,
                "objective-type": "linear", "output-delay": 0, "ng-affine-options": "",
                "ng-linear-options": "", "learning-rate-factor": "", "l2-regularize": "",
                "max-change": 1.5, "param-stddev": 0.0, "bias-stddev": 0.0}

    def check(self):
        _check_objective(self)
        check_positive_number(self, "learning-rate-factor")
        if self.config["orthonormal-constraint"] <= 0.0:
            raise self.error("orthonormal-constraint must be positive")
        bottleneck, dim = self.config["bottleneck-dim"], self.config["dim"]
        if bottleneck >= 0 and not 0 < bottleneck < min(self.input.dim, dim):
            raise self.error(f"bottleneck-dim={bottleneck} must be positive and smaller than "
                             f"both the input dim {self.input.dim} and dim={dim}")

    def outputs(self):
        dim = self.config["dim"]
        names = ["affine"] + (["log-softmax"] if self.config["include-log-softmax"] else [])
        return {aux: (f"{self.name}.{aux}", dim) for aux in names}

    def config_lines(self):
        c, name = self.config, self.name
        lines = []
        node, node_dim = self.input.final, self.input.dim
        if c["bottleneck-dim"] >= 0:
            linear_options = pass_through(c["ng-linear-options"], c,
                                          ("learning-rate-factor", "l2-regularize", "max-change"))
            stddev = c["orthonormal-constraint"] / math.sqrt(node_dim)
            lines += [f"component name={name}.linear type=LinearComponent "
                      f"orthonormal-constraint={c['orthonormal-constraint']} param-stddev={stddev} "
                      f"input-dim={node_dim} output-dim={c['bottleneck-dim']} max-change=0.75 "
                      f"{linear_options}",
                      f"component-node name={name}.linear component={name}.linear input={node}"]
            node, node_dim = f"{name}.linear", c["bottleneck-dim"]
        affine_options = pass_through(c["ng-affine-options"], c,
                                      ("learning-rate-factor", "l2-regularize", "max-change",
                                       "param-stddev", "bias-stddev"))
        lines += [f"component name={name}.affine type=NaturalGradientAffineComponent "
                  f"input-dim={node_dim} output-dim={c['dim']} {affine_options}",
                  f"component-node name={name}.affine component={name}.affine input={node}"]
        node = f"{name}.affine"
        if c["include-log-softmax"]:
            lines += [f"component name={name}.log-softmax type=LogSoftmaxComponent dim={c['dim']}",
                      f"component-node name={name}.log-softmax component={name}.log-softmax "
                      f"input={node}"]
            node = f"{name}.log-softmax"
        lines.append(_output_node(name, node, c["output-delay"], c["objective-type"]))
        return ref_and_final(lines)


class FixedAffineLayer(XconfigLayer):
    """`fixed-affine-layer`: the LDA-like transform. final.config reads the matrix file,
    ref.config gets a random one of the same dims, and init.config (used to accumulate the
    LDA stats) outputs the layer's input, through a NoOp `<name>.delayed` if delay != 0."""
    layer_types = ("fixed-affine-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "affine-transform-file": "", "delay": 0,
                "write-init-config": True}

    def check(self):
        if not self.config["affine-transform-file"]:
            raise self.error("affine-transform-file= must be given")

    def outputs(self):
        return {None: (self.name, self.config["dim"])}

    def config_lines(self):
        name, source = self.name, self.input.final
        delay = self.config["delay"]
        lines = []
        if self.config["write-init-config"] and delay != 0:
            lines += [("init", f"component name={name}.delayed type=NoOpComponent "
                               f"dim={self.input.dim}"),
                      ("init", f"component-node name={name}.delayed component={name}.delayed "
                               f"input={source}"),
                      ("init", f"output-node name=output input=Offset({name}.delayed, {delay})")]
        elif self.config["write-init-config"]:
            lines.append(("init", f"output-node name=output input={source}"))
        node = f"component-node name={name} component={name} input={source}"
        return lines + [
            ("final", f"component name={name} type=FixedAffineComponent "
                      f"matrix={self.config['affine-transform-file']}"),
            ("ref", f"component name={name} type=FixedAffineComponent "
                    f"input-dim={self.input.dim} output-dim={self.config['dim']}"),
            ("final", node), ("ref", node)]


class AffineLayer(XconfigLayer):
    """`affine-layer`: one NaturalGradientAffineComponent, param-stddev 1/sqrt(input dim)."""
    layer_types = ("affine-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "param-stddev": -1.0, "bias-stddev": 1.0,
                "bias-mean": 0.0, "max-change": 0.75, "l2-regularize": 0.0,
                "learning-rate-factor": 1.0, "ng-affine-options": ""}

    def derive(self):
        super().derive()
        if self.config["param-stddev"] < 0:
            self.config["param-stddev"] = 1.0 / math.sqrt(self.input.dim)

    def outputs(self):
        return {None: (self.name, self.config["dim"])}

    def config_lines(self):
        c = self.config
        # Kaldi passes these five unconditionally (not learning-rate-factor), then the extras.
        options = "".join(f" {k}={c[k]}" for k in ("param-stddev", "bias-stddev", "bias-mean",
                                                   "max-change", "l2-regularize"))
        options += c["ng-affine-options"]
        return [(basename, line) for basename in ("final", "ref") for line in (
            f"component name={self.name} type=NaturalGradientAffineComponent "
            f"input-dim={self.input.dim} output-dim={c['dim']} {options}",
            f"component-node name={self.name} component={self.name} input={self.input.final}")]


class NonlinearityLayer(XconfigLayer):
    """`<nonlin>[-<nonlin>...]-layer`, e.g. relu-batchnorm-layer: an affine component (after
    an orthonormal bottleneck if bottleneck-dim is set) followed by the named components."""
    layer_types = ("relu-layer", "relu-renorm-layer", "relu-batchnorm-dropout-layer",
                   "relu-dropout-layer", "relu-batchnorm-layer", "relu-batchnorm-so-layer",
                   "batchnorm-so-relu-layer", "batchnorm-layer", "sigmoid-layer", "tanh-layer")

    def defaults(self):
        # Kaldi's option set for this family, including the dropout options that only its
        # dropout variants read.
        return {"input": "[-1]", "dim": -1, "bottleneck-dim": -1, "self-repair-scale": 1.0e-05,
                "target-rms": 1.0, "ng-affine-options": "", "ng-linear-options": "",
                "dropout-proportion": 0.5, "dropout-per-dim": False,
                "dropout-per-dim-continuous": False, "add-log-stddev": False,
                "bias-stddev": "", "l2-regularize": "", "learning-rate-factor": "",
                "max-change": 0.75}

    @property
    def nonlinearities(self) -> list[str]:
        return self.layer_type.split("-")[:-1]

    def check(self):
        c = self.config
        bottleneck = c["bottleneck-dim"]
        if bottleneck >= 0 and not 0 < bottleneck < c["dim"]:
            raise self.error(f"bottleneck-dim={bottleneck} must be positive and smaller than "
                             f"dim={c['dim']}")
        if not 0.0 <= c["self-repair-scale"] <= 1.0:
            raise self.error(f"self-repair-scale={c['self-repair-scale']} must be in [0, 1]")
        if c["target-rms"] < 0.0:
            raise self.error(f"target-rms={c['target-rms']} must not be negative")
        check_positive_number(self, "learning-rate-factor")
        if c["add-log-stddev"] and self.nonlinearities[-1] != "renorm":
            raise self.error("add-log-stddev=true needs a final renorm")

    def outputs(self):
        return {None: (f"{self.name}.{self.nonlinearities[-1]}", self.config["dim"])}

    def config_lines(self):
        c, name = self.config, self.name
        # With add-log-stddev the final renorm appends one dim, so everything before is 1 less.
        dim = c["dim"] - 1 if c["add-log-stddev"] else c["dim"]
        node, node_dim = self.input.final, self.input.dim
        lines = []
        if c["bottleneck-dim"] > 0:
            linear_options = pass_through(c["ng-linear-options"], c,
                                          ("max-change", "learning-rate-factor"))
            lines += [f"component name={name}.linear type=LinearComponent "
                      f"input-dim={node_dim} orthonormal-constraint=1.0 "
                      f"output-dim={c['bottleneck-dim']} {linear_options}",
                      f"component-node name={name}.linear component={name}.linear input={node}"]
            node, node_dim = f"{name}.linear", c["bottleneck-dim"]
        affine_options = pass_through(c["ng-affine-options"], c, (
            "max-change", "learning-rate-factor", "bias-stddev", "l2-regularize"))
        lines += [f"component name={name}.affine type=NaturalGradientAffineComponent "
                  f"input-dim={node_dim} output-dim={dim} {affine_options}",
                  f"component-node name={name}.affine component={name}.affine input={node}"]
        node = f"{name}.affine"
        last = len(self.nonlinearities) - 1
        for i, kind in enumerate(self.nonlinearities):
            lines += [f"component name={name}.{kind} {self._component(kind, dim, i == last)}",
                      f"component-node name={name}.{kind} component={name}.{kind} input={node}"]
            node = f"{name}.{kind}"
        return ref_and_final(lines)

    def _component(self, kind: str, dim: int, last: bool) -> str:
        scale, rms = self.config["self-repair-scale"], self.config["target-rms"]
        if kind == "relu":
            return f"type=RectifiedLinearComponent dim={dim} self-repair-scale={scale}"
        if kind in ("sigmoid", "tanh"):
            return f"type={kind.capitalize()}Component dim={dim} self-repair-scale={scale}"
        if kind == "batchnorm":
            return f"type=BatchNormComponent dim={dim} target-rms={rms}"
        if kind == "so":
            return f"type=ScaleAndOffsetComponent dim={dim} max-change=0.5 "
        if kind == "dropout":
            return self._dropout(dim)
        log_stddev = "true" if last and self.config["add-log-stddev"] else "false"
        return f"type=NormalizeComponent dim={dim} target-rms={rms} add-log-stddev={log_stddev}"

    def _dropout(self, dim: int) -> str:
        """Per-frame 0/1 DropoutComponent, or with dropout-per-dim(-continuous) a
        GeneralDropoutComponent whose mask is shared across the frames of a sequence."""
        c = self.config
        p = c["dropout-proportion"]
        if not (c["dropout-per-dim"] or c["dropout-per-dim-continuous"]):
            return f"type=DropoutComponent dim={dim} dropout-proportion={p}"
        continuous = "continuous=true" if c["dropout-per-dim-continuous"] else ""
        return f"type=GeneralDropoutComponent dim={dim} dropout-proportion={p} {continuous}"


def check_positive_number(layer: XconfigLayer, key: str) -> None:
    """For options kept as text (passed through only when set) that must be numbers > 0."""
    text = layer.config[key]
    if text == "":
        return
    try:
        ok = float(text) > 0.0
    except ValueError:
        ok = False
    if not ok:
        raise layer.error(f"{key}={text} must be a positive number")
