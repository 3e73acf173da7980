"""`tdnnf-layer` and `prefinal-layer` (Kaldi's `xconfig/composite_layers.py`:
XconfigTdnnfLayer, XconfigPrefinalLayer; components in docs/kaldi-formats.md 4.3, 4.6, 4.10,
4.11 and `kaldi_avg/kaldi/nnet3/components/tdnn.py`, `simple.py` GeneralDropoutComponent).

tdnnf-layer: the factorized TDNN of Povey et al. 2018: a TdnnComponent to bottleneck-dim
without bias under a floating semi-orthogonal constraint (orthonormal-constraint=-1.0), a
TdnnComponent to dim, ReLU, BatchNorm, optional continuous per-sequence dropout, and a bypass
`Sum(Scale(bypass-scale, input), ...)` cached in a NoOpComponent.
"""
from __future__ import annotations

from .layer import XconfigLayer, ref_and_final

_CONTEXTS = ("default", "left-only", "shift-left", "none")


class TdnnfLayer(XconfigLayer):
    layer_types = ("tdnnf-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "bottleneck-dim": -1, "bypass-scale": 0.66,
                "dropout-proportion": -1.0, "time-stride": 1, "l2-regularize": 0.0,
                "max-change": 0.75, "self-repair-scale": 1.0e-05, "context": "default"}

    def derive(self):
        pass  # Kaldi derives nothing: dim must be given

    def check(self):
        c = self.config
        if c["bottleneck-dim"] <= 0:
            raise self.error("bottleneck-dim must be set and > 0")
        if c["dim"] <= c["bottleneck-dim"]:
            raise self.error("dim must be greater than bottleneck-dim")
        p = c["dropout-proportion"]
        if p != -1.0 and not 0.0 <= p < 1.0:
            raise self.error(f"dropout-proportion={p} must be in [0, 1) (or -1: no dropout)")
        if abs(c["bypass-scale"]) > 1.0:
            raise self.error(f"bypass-scale={c['bypass-scale']} must be in [-1, 1]")
        if c["dim"] != self.input.dim and c["bypass-scale"] != 0.0:
            raise self.error(f"bypass-scale is nonzero but dim={c['dim']} != input dim {self.input.dim}")
        if c["context"] not in _CONTEXTS:
            raise self.error(f"context={c['context']} must be one of {', '.join(_CONTEXTS)}")

    def _last_before_bypass(self) -> str:
        return "dropout" if self.config["dropout-proportion"] != -1.0 else "batchnorm"

    def outputs(self):
        last = "noop" if self.config["bypass-scale"] != 0.0 else self._last_before_bypass()
        return {None: (f"{self.name}.{last}", self.config["dim"])}

    def _time_offsets(self) -> tuple[str, str]:
        """Offsets of the bottleneck TDNN and of the second TDNN."""
        stride, context = self.config["time-stride"], self.config["context"]
        if stride == 0 or context == "none":
            return "0", "0"
        second = {"default": f"0,{stride}", "shift-left": f"{-stride},0", "left-only": "0"}[context]
        return f"{-stride},0", second

    def config_lines(self):
        c, name = self.config, self.name
        dim, bottleneck = c["dim"], c["bottleneck-dim"]
        offsets1, offsets2 = self._time_offsets()
        common = f"l2-regularize={c['l2-regularize']} max-change={c['max-change']}"
        lines = [
            f"component name={name}.linear type=TdnnComponent input-dim={self.input.dim} "
            f"output-dim={bottleneck} {common} use-bias=false time-offsets={offsets1} "
            "orthonormal-constraint=-1.0",
            f"component-node name={name}.linear component={name}.linear input={self.input.final}",
            f"component name={name}.affine type=TdnnComponent input-dim={bottleneck} "
            f"output-dim={dim} {common} time-offsets={offsets2}",
            f"component-node name={name}.affine component={name}.affine input={name}.linear",
            f"component name={name}.relu type=RectifiedLinearComponent dim={dim} "
            f"self-repair-scale={c['self-repair-scale']}",
            f"component-node name={name}.relu component={name}.relu input={name}.affine",
            f"component name={name}.batchnorm type=BatchNormComponent dim={dim}",
            f"component-node name={name}.batchnorm component={name}.batchnorm input={name}.relu"]
        if c["dropout-proportion"] != -1.0:
            lines += [f"component name={name}.dropout type=GeneralDropoutComponent dim={dim} "
                      f"dropout-proportion={c['dropout-proportion']} continuous=true",
                      f"component-node name={name}.dropout component={name}.dropout "
                      f"input={name}.batchnorm"]
        if c["bypass-scale"] != 0.0:
            lines += [f"component name={name}.noop type=NoOpComponent dim={dim}",
                      f"component-node name={name}.noop component={name}.noop "
                      f"input=Sum(Scale({c['bypass-scale']}, {self.input.final}), "
                      f"{name}.{self._last_before_bypass()})"]
        return ref_and_final(lines)


class PrefinalLayer(XconfigLayer):
    """affine to big-dim, ReLU, BatchNorm, LinearComponent to small-dim under a floating
    orthonormal constraint, BatchNorm: the usual block before a chain/xent output."""
    layer_types = ("prefinal-layer",)

    def defaults(self):
        return {"input": "[-1]", "big-dim": -1, "small-dim": -1, "l2-regularize": 0.0,
                "max-change": 0.75, "self-repair-scale": 1.0e-05}

    def derive(self):
        pass

    def check(self):
        if self.config["small-dim"] <= 0:
            raise self.error("small-dim must be set and > 0")
        if self.config["big-dim"] <= self.config["small-dim"]:
            raise self.error("big-dim must be greater than small-dim")

    def outputs(self):
        return {None: (f"{self.name}.batchnorm2", self.config["small-dim"])}

    def config_lines(self):
        c, name = self.config, self.name
        big, small = c["big-dim"], c["small-dim"]
        common = f"l2-regularize={c['l2-regularize']} max-change={c['max-change']}"
        return ref_and_final([
            f"component name={name}.affine type=NaturalGradientAffineComponent "
            f"input-dim={self.input.dim} output-dim={big} {common}",
            f"component-node name={name}.affine component={name}.affine input={self.input.final}",
            f"component name={name}.relu type=RectifiedLinearComponent dim={big} "
            f"self-repair-scale={c['self-repair-scale']}",
            f"component-node name={name}.relu component={name}.relu input={name}.affine",
            f"component name={name}.batchnorm1 type=BatchNormComponent dim={big}",
            f"component-node name={name}.batchnorm1 component={name}.batchnorm1 input={name}.relu",
            f"component name={name}.linear type=LinearComponent input-dim={big} output-dim={small} "
            f"{common} orthonormal-constraint=-1 ",
            f"component-node name={name}.linear component={name}.linear input={name}.batchnorm1",
            f"component name={name}.batchnorm2 type=BatchNormComponent dim={small}",
            f"component-node name={name}.batchnorm2 component={name}.batchnorm2 input={name}.linear"])
