"""Identity-like and structural components (docs/kaldi-formats.md 4.11, 4.14, 4.15, 4.17)."""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import Component, Kind, SameDimComponent, field, legacy, optional


class NoOpComponent(SameDimComponent):
    """y = x; the backprop is multiplied by backprop-scale. Old models stored NonlinearComponent
    statistics here; they are read and dropped, as Kaldi does."""
    type_name = "NoOpComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        legacy("<ValueAvg>", Kind.VECTOR),
        legacy("<DerivAvg>", Kind.VECTOR),
        legacy("<Count>", Kind.F64),
        legacy("<OderivRms>", Kind.VECTOR),
        legacy("<OderivCount>", Kind.F64),
        legacy("<NumDimsSelfRepaired>", Kind.F64),
        legacy("<NumDimsProcessed>", Kind.F64),
        optional("<BackpropScale>", Kind.F32, 1.0),
    )

    def info_items(self):
        return [("dim", self.dim)] + (
            [("backprop-scale", self.backprop_scale)] if self.backprop_scale != 1.0 else [])

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> NoOpComponent:
        return cls(dim=cfg.get_int("dim"), backprop_scale=cfg.get_float("backprop-scale", 1.0))


class ElementwiseProductComponent(Component):
    """The input is k blocks of out_dim values; y = their element-wise product."""
    type_name = "ElementwiseProductComponent"
    FIELDS = (field("<InputDim>", Kind.I32, attr="in_dim"),
              field("<OutputDim>", Kind.I32, attr="out_dim"))

    def input_dim(self) -> int:
        return self.in_dim

    def output_dim(self) -> int:
        return self.out_dim

    def check(self) -> None:
        self.require(0 < self.out_dim < self.in_dim and self.in_dim % self.out_dim == 0,
                     f"input-dim {self.in_dim} must be a multiple (> 1) of output-dim "
                     f"{self.out_dim}")

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> ElementwiseProductComponent:
        return cls(in_dim=cfg.get_int("input-dim"), out_dim=cfg.get_int("output-dim"))


class ClipGradientComponent(SameDimComponent):
    """Forward identity; backward clips derivatives. Old models lack the self-repair fields and
    the last two counters (Kaldi then uses threshold 1, target 0, scale 0 and zero counts)."""
    type_name = "ClipGradientComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        field("<ClippingThreshold>", Kind.F32, 15.0),
        field("<NormBasedClipping>", Kind.BOOL, False),
        optional("<SelfRepairClippedProportionThreshold>", Kind.F32, 1.0),
        optional("<SelfRepairTarget>", Kind.F32, 0.0),
        optional("<SelfRepairScale>", Kind.F32, 0.0),
        field("<NumElementsClipped>", Kind.I32, 0),
        field("<NumElementsProcessed>", Kind.I32, 0),
        optional("<NumSelfRepaired>", Kind.I32, 0),
        optional("<NumBackpropped>", Kind.I32, 0),
    )

    def check(self) -> None:
        super().check()
        for attr in ("clipping_threshold", "self_repair_clipped_proportion_threshold",
                     "self_repair_target", "self_repair_scale"):
            self.require(getattr(self, attr) >= 0, f"{attr} must be >= 0")

    def info_items(self):
        processed = self.num_elements_processed
        items = [("dim", self.dim), ("norm-based-clipping", self.norm_based_clipping),
                 ("clipping-threshold", self.clipping_threshold),
                 ("clipped-proportion",
                  float(self.num_elements_clipped) / processed if processed > 0 else 0)]
        if self.self_repair_scale != 0.0:
            items += [("self-repair-clipped-proportion-threshold",
                       self.self_repair_clipped_proportion_threshold),
                      ("self-repair-target", self.self_repair_target),
                      ("self-repair-scale", self.self_repair_scale)]
        return items

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> ClipGradientComponent:
        return cls(dim=cfg.get_int("dim"),
                   clipping_threshold=cfg.get_float("clipping-threshold", 15.0),
                   norm_based_clipping=cfg.get_bool("norm-based-clipping", False),
                   self_repair_clipped_proportion_threshold=cfg.get_float(
                       "self-repair-clipped-proportion-threshold", 0.01),
                   self_repair_target=cfg.get_float("self-repair-target", 0.0),
                   self_repair_scale=cfg.get_float("self-repair-scale", 1.0))


class DropoutComponent(SameDimComponent):
    """Kaldi dropout is not inverted: training y = x * mask, test mode y = (1 - p) x. Export a
    PyTorch model (inverted dropout) without it, or with proportion 0 (4.17)."""
    type_name = "DropoutComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        field("<DropoutProportion>", Kind.F32),
        optional("<DropoutPerFrame>", Kind.BOOL, False),
        optional("<TestMode>", Kind.BOOL, False),
    )

    def check(self) -> None:
        super().check()
        self.require(0.0 <= self.dropout_proportion <= 1.0, "dropout-proportion must be in [0, 1]")

    def info_items(self):
        return [("dim", self.dim), ("dropout-proportion", self.dropout_proportion),
                ("dropout-per-frame", self.dropout_per_frame)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> DropoutComponent:
        return cls(dim=cfg.get_int("dim"),
                   dropout_proportion=cfg.get_float("dropout-proportion"),
                   dropout_per_frame=cfg.get_bool("dropout-per-frame", False),
                   test_mode=cfg.get_bool("test-mode", False))


class GeneralDropoutComponent(SameDimComponent):
    """Dropout whose mask is shared: one mask row of block-dim values per sequence (per
    time-period frames when time-period > 0), used for every block of the row. Training: a 0/1
    mask rescaled by 1/(1-p) (inverted, unlike DropoutComponent), or with continuous=true a
    uniform scale on [1-2p, 1+2p]; test mode: identity. Kaldi's
    src/nnet3/nnet-general-component.cc (`GeneralDropoutComponent::Write/Read/GetMemo/
    PrecomputeIndexes`); the xconfig tdnnf-layer and the dropout-per-dim variants of
    relu-batchnorm-dropout-layer use it. SpecAugment fields are written only when set."""
    type_name = "GeneralDropoutComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        field("<BlockDim>", Kind.I32, lambda v: v["dim"]),
        field("<TimePeriod>", Kind.I32, 0),
        field("<DropoutProportion>", Kind.F32, 0.5),
        optional("<SpecAugmentMaxProportion>", Kind.F32, 0.0,
                 when=lambda c: c.spec_augment_max_proportion != 0.0),
        optional("<SpecAugmentMaxRegions>", Kind.I32, 1,
                 when=lambda c: c.spec_augment_max_proportion != 0.0
                 and c.spec_augment_max_regions != 1),
        optional("<TestMode>", Kind.FLAG, False, when=lambda c: c.test_mode),
        optional("<Continuous>", Kind.FLAG, False, when=lambda c: c.continuous),
    )

    def check(self) -> None:
        super().check()
        self.require(self.block_dim > 0 and self.dim % self.block_dim == 0,
                     f"block-dim {self.block_dim} must be > 0 and divide dim {self.dim}")
        self.require(0.0 <= self.dropout_proportion <= 1.0, "dropout-proportion must be in [0, 1]")
        if self.spec_augment_max_proportion != 0.0:
            self.require(0.0 < self.spec_augment_max_proportion <= 1.0 and not self.continuous
                         and self.spec_augment_max_regions >= 1,
                         "invalid specaugment-max-proportion/-regions or continuous")

    def info_items(self):
        items = [("dim", self.dim), ("block-dim", self.block_dim),
                 ("dropout-proportion", self.dropout_proportion)]
        if self.continuous:
            items.append(("continuous", True))
        if self.test_mode:
            items.append(("test-mode", True))
        if self.time_period > 0:
            items.append(("time-period", self.time_period))
        if self.spec_augment_max_proportion != 0.0:
            items += [("specaugment-max-proportion", self.spec_augment_max_proportion),
                      ("specaugment-max-regions", self.spec_augment_max_regions)]
        return items

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> GeneralDropoutComponent:
        dim = cfg.get_int("dim")
        return cls(dim=dim, block_dim=cfg.get_int("block-dim", dim),
                   time_period=cfg.get_int("time-period", 0),
                   dropout_proportion=cfg.get_float("dropout-proportion", 0.5),
                   spec_augment_max_proportion=cfg.get_float("specaugment-max-proportion", 0.0),
                   spec_augment_max_regions=cfg.get_int("specaugment-max-regions", 1),
                   continuous=cfg.get_bool("continuous", False),
                   test_mode=cfg.get_bool("test-mode", False))
