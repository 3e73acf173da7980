"""Element-wise nonlinearities sharing Kaldi's NonlinearComponent layout (docs/kaldi-formats.md 4.2).

The statistics are diagnostics (and drive self-repair and, through steps/nnet3/get_saturation.pl,
shrinkage in Kaldi training); they are kept exactly as read: averages (ValueAvg, DerivAvg,
OderivRms) and double-precision counts. A new component
has empty statistics, as a freshly initialized Kaldi component does.
"""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import Kind, SameDimComponent, field, optional, summarize_vector

UNSET_THRESHOLD = -1000.0          # Kaldi's kUnsetThreshold


def _empty(_values) -> np.ndarray:
    return np.zeros(0, np.float32)


class NonlinearComponent(SameDimComponent):
    FIELDS = (
        field("<Dim>", Kind.I32),
        optional("<BlockDim>", Kind.I32, lambda v: v["dim"], when=lambda c: c.block_dim != c.dim),
        field("<ValueAvg>", Kind.VECTOR, _empty),
        field("<DerivAvg>", Kind.VECTOR, _empty),
        field("<Count>", Kind.F64, 0.0),
        optional("<OderivRms>", Kind.VECTOR, _empty),
        optional("<OderivCount>", Kind.F64, 0.0),
        optional("<NumDimsSelfRepaired>", Kind.F64, 0.0),
        optional("<NumDimsProcessed>", Kind.F64, 0.0),
        optional("<SelfRepairLowerThreshold>", Kind.F32, UNSET_THRESHOLD,
                 when=lambda c: c.self_repair_lower_threshold != UNSET_THRESHOLD),
        optional("<SelfRepairUpperThreshold>", Kind.F32, UNSET_THRESHOLD,
                 when=lambda c: c.self_repair_upper_threshold != UNSET_THRESHOLD),
        optional("<SelfRepairScale>", Kind.F32, 0.0, when=lambda c: c.self_repair_scale != 0.0),
    )

    def check(self) -> None:
        super().check()
        self.require(self.block_dim > 0 and self.dim % self.block_dim == 0,
                     f"block-dim {self.block_dim} must be > 0 and divide dim {self.dim}")
        for attr in ("value_avg", "deriv_avg", "oderiv_rms"):
            n = np.size(getattr(self, attr))
            self.require(n in (0, self.dim), f"{attr} has {n} entries, expected 0 or dim={self.dim}")
        self.require(self.count >= 0 and self.oderiv_count >= 0, "counts must be >= 0")

    def info_items(self):
        items = [("dim", self.dim)]
        if self.block_dim != self.dim:
            items.append(("block-dim", self.block_dim))
        if self.self_repair_lower_threshold != UNSET_THRESHOLD:
            items.append(("self-repair-lower-threshold", self.self_repair_lower_threshold))
        if self.self_repair_upper_threshold != UNSET_THRESHOLD:
            items.append(("self-repair-upper-threshold", self.self_repair_upper_threshold))
        if self.self_repair_scale != 0.0:
            items.append(("self-repair-scale", self.self_repair_scale))
        if self.count > 0 and np.size(self.value_avg) == self.dim:
            items.append(("count", float("%.3g" % self.count)))
            items.append(("self-repaired-proportion",
                          self.num_dims_self_repaired / self.num_dims_processed
                          if self.num_dims_processed > 0 else 0))
            items.append(("value-avg", summarize_vector(self.value_avg)))
            if np.size(self.deriv_avg) == self.dim:
                items.append(("deriv-avg", summarize_vector(self.deriv_avg)))
        if self.oderiv_count > 0 and np.size(self.oderiv_rms) == self.dim:
            items.append(("oderiv-rms", summarize_vector(self.oderiv_rms)))
            items.append(("oderiv-count", float(self.oderiv_count)))
        return items

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> NonlinearComponent:
        dim = cfg.get_int("dim")
        return cls(dim=dim, block_dim=cfg.get_int("block-dim", dim),
                   self_repair_lower_threshold=cfg.get_float("self-repair-lower-threshold",
                                                             UNSET_THRESHOLD),
                   self_repair_upper_threshold=cfg.get_float("self-repair-upper-threshold",
                                                             UNSET_THRESHOLD),
                   self_repair_scale=cfg.get_float("self-repair-scale", 0.0))


class SigmoidComponent(NonlinearComponent):
    type_name = "SigmoidComponent"


class TanhComponent(NonlinearComponent):
    type_name = "TanhComponent"


class RectifiedLinearComponent(NonlinearComponent):
    type_name = "RectifiedLinearComponent"


class SoftmaxComponent(NonlinearComponent):
    type_name = "SoftmaxComponent"


class LogSoftmaxComponent(NonlinearComponent):
    type_name = "LogSoftmaxComponent"
