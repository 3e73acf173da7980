"""Feature front-end layers of Kaldi's CNN/TDNN-F recipes: `idct-layer`, `spec-augment-layer`
(Kaldi's `xconfig/basic_layers.py` XconfigIdctLayer, XconfigSpecAugmentLayer), `delta-layer`,
`combine-feature-maps-layer` (`xconfig/trivial_layers.py` XconfigDeltaLayer,
XconfigCombineFeatureMapsLayer); docs/kaldi-formats.md 5.13."""
from __future__ import annotations

import math

from .layer import XconfigLayer, ref_and_final


def _with_init(layer: XconfigLayer, lines: list[str]) -> list[tuple[str, str]]:
    bases = ("ref", "final", "init") if layer.config["include-in-init"] else ("ref", "final")
    return [(basename, line) for line in lines for basename in bases]


def idct_matrix_text(input_dim: int, output_dim: int, cepstral_lifter: float) -> str:
    """The text Kaldi's layer writes to affine-transform-file= (libs/common.py
    compute_idct_matrix + write_kaldi_matrix): row n of output_dim, column k of input_dim,
    sqrt(1/N) for k = 0 and sqrt(2/N) cos(pi/N (n + 1/2) k) otherwise, divided by the lifter
    1 + L/2 sin(pi k / L) when L != 0, then a zero bias column; Python's str() of each float.
    The float operations are in Kaldi's order, so the digits are the same."""
    n_out = float(output_dim)
    rows = []
    for n in range(output_dim):
        row = [math.sqrt(1.0 / n_out)] + [math.sqrt(2.0 / n_out) * math.cos(math.pi / n_out * (n + 0.5) * k)
                                          for k in range(1, input_dim)]
        if cepstral_lifter != 0:
            row = [v / (1.0 + 0.5 * cepstral_lifter * math.sin(math.pi * k / float(cepstral_lifter)))
                   for k, v in enumerate(row)]
        rows.append(" ".join(str(v) for v in row) + " 0")
    return "[ " + "\n".join(rows) + " ]"


class IdctLayer(XconfigLayer):
    """MFCC -> filterbank-like features: a FixedAffineComponent reading the IDCT matrix that the
    layer writes at config time (`files`); dim= defaults to the input dim."""
    layer_types = ("idct-layer",)

    def defaults(self):
        return {"input": "[-1]", "dim": -1, "cepstral-lifter": 22.0, "affine-transform-file": "",
                "include-in-init": False}

    def derive(self):
        pass  # Kaldi keeps dim=-1 in xconfig.expanded.*; the output dim is derived on use

    def check(self):
        if not self.config["affine-transform-file"]:
            raise self.error("affine-transform-file= must be given")

    def outputs(self):
        dim = self.config["dim"]
        return {None: (self.name, dim if dim > 0 else self.input.dim)}

    def files(self):
        return {self.config["affine-transform-file"]:
                idct_matrix_text(self.input.dim, self.output_dim(), self.config["cepstral-lifter"])}

    def config_lines(self):
        return _with_init(self, [
            f"component name={self.name} type=FixedAffineComponent "
            f"matrix={self.config['affine-transform-file']}",
            f"component-node name={self.name} component={self.name} input={self.input.final}"])


class SpecAugmentLayer(XconfigLayer):
    """SpecAugment: a GeneralDropoutComponent frequency mask `<name>.freq-mask`, then a
    SpecAugmentTimeMaskComponent `<name>.time-mask` (the layer's output)."""
    layer_types = ("spec-augment-layer",)

    def defaults(self):
        return {"input": "[-1]", "freq-max-proportion": 0.5, "time-zeroed-proportion": 0.2,
                "time-mask-max-frames": 20, "include-in-init": False}

    def check(self):
        c = self.config
        if not (0.0 < c["freq-max-proportion"] < 1.0 and 0.0 < c["time-zeroed-proportion"] < 1.0
                and c["time-mask-max-frames"] >= 1):
            raise self.error("freq-max-proportion and time-zeroed-proportion must be in (0, 1) "
                             "and time-mask-max-frames >= 1")

    def outputs(self):
        return {None: (f"{self.name}.time-mask", self.input.dim)}

    def config_lines(self):
        name, dim, c = self.name, self.input.dim, self.config
        return _with_init(self, [
            f"component name={name}.freq-mask type=GeneralDropoutComponent dim={dim} "
            f"specaugment-max-proportion={c['freq-max-proportion']}",
            f"component-node name={name}.freq-mask component={name}.freq-mask input={self.input.final}",
            f"component name={name}.time-mask type=SpecAugmentTimeMaskComponent dim={dim} "
            f"zeroed-proportion={c['time-zeroed-proportion']} "
            f"time-mask-max-frames={c['time-mask-max-frames']}",
            f"component-node name={name}.time-mask component={name}.time-mask input={name}.freq-mask"])


class DeltaLayer(XconfigLayer):
    """[x(t), x(t+1) - x(t-1), x(t-2) + x(t+2) - 2 x(t)] through a NoOp `<input>_2`, then a
    BatchNormComponent named after the layer. The scaled terms read dim-range copies of the
    input node (`<input>_copy1/2`), so the input must be a single node, as in Kaldi."""
    layer_types = ("delta-layer",)

    def defaults(self):
        return {"input": "[-1]"}

    def outputs(self):
        return {None: (self.name, 3 * self.input.dim)}

    def config_lines(self):
        x, dim = self.input.final, self.input.dim
        return ref_and_final([
            f"dim-range-node name={x}_copy1 input-node={x} dim={dim} dim-offset=0",
            f"dim-range-node name={x}_copy2 input-node={x} dim={dim} dim-offset=0",
            f"component name={x}_2 type=NoOpComponent dim={3 * dim}",
            f"component-node name={x}_2 component={x}_2 input=Append(Offset({x},0), "
            f"Sum(Offset(Scale(-1.0,{x}_copy1),-1), Offset({x},1)), Sum(Offset({x},-2), "
            f"Offset({x},2), Offset(Scale(-2.0,{x}_copy2),0)))",
            f"component name={self.name} type=BatchNormComponent dim={3 * dim}",
            f"component-node name={self.name} component={self.name} input={x}_2"])


class CombineFeatureMapsLayer(XconfigLayer):
    """A PermuteComponent that interleaves two or three appended feature maps of the same
    height (num-filters1/2/3 filters each) into one map with the filters summed."""
    layer_types = ("combine-feature-maps-layer",)

    def defaults(self):
        return {"input": "[-1]", "num-filters1": -1, "num-filters2": -1, "num-filters3": 0,
                "height": -1}

    def check(self):
        c = self.config
        f1, f2, f3, h = c["num-filters1"], c["num-filters2"], c["num-filters3"], c["height"]
        if f1 <= 0 or f2 <= 0 or f3 < 0 or h <= 0:
            raise self.error("invalid values of num-filters1, num-filters2 and/or height")
        if self.input.dim != (f1 + f2 + f3) * h:
            raise self.error(f"expected input dim {(f1 + f2 + f3) * h} from num-filters1/2/3 and "
                             f"height, got {self.input.dim}")

    def outputs(self):
        return {None: (self.name, self.input.dim)}

    def config_lines(self):
        c = self.config
        filters, height = (c["num-filters1"], c["num-filters2"], c["num-filters3"]), c["height"]
        column_map = []
        for h in range(height):
            offset = 0   # where map i starts: after the earlier maps, height * filters each
            for f in filters:
                column_map += range(offset + h * f, offset + (h + 1) * f)
                offset += height * f
        # Kaldi's line ends with a blank.
        return ref_and_final([
            f"component name={self.name} type=PermuteComponent "
            f"column-map={','.join(map(str, column_map))} ",
            f"component-node name={self.name} component={self.name} input={self.input.final}"])


FRONTEND_LAYER_CLASSES = (IdctLayer, SpecAugmentLayer, DeltaLayer, CombineFeatureMapsLayer)
