"""Feature front-end components of Kaldi's CNN/TDNN-F recipes: SpecAugmentTimeMaskComponent
(the time half of `spec-augment-layer`) and PermuteComponent (`combine-feature-maps-layer`)
(docs/kaldi-formats.md 4.21, 4.22)."""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import Component, Kind, SameDimComponent, field, optional
from .initializers import require


class SpecAugmentTimeMaskComponent(SameDimComponent):
    """Training: zeroes whole frames in alternating kept/zeroed runs per sequence (mask math in
    kaldi_avg/model/frontend_ops.py); test mode: identity. Kaldi's
    src/nnet3/nnet-general-component.cc (`SpecAugmentTimeMaskComponent::Read/Write/
    InitFromConfig/GetMemo`)."""
    type_name = "SpecAugmentTimeMaskComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        field("<ZeroedProportion>", Kind.F32, 0.25),
        field("<TimeMaskMaxFrames>", Kind.I32, 10),
        optional("<TestMode>", Kind.FLAG, False, when=lambda c: c.test_mode),
    )

    def check(self) -> None:
        super().check()
        self.require(self.time_mask_max_frames > 1, "time-mask-max-frames must be > 1")

    def info_items(self):
        return [("dim", self.dim), ("zeroed-proportion", self.zeroed_proportion),
                ("time-mask-max-frames", self.time_mask_max_frames)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> SpecAugmentTimeMaskComponent:
        # Kaldi's InitFromConfig reads no test-mode= (it is set on the network, not the line).
        return cls(dim=cfg.get_int("dim"), zeroed_proportion=cfg.get_float("zeroed-proportion", 0.25),
                   time_mask_max_frames=cfg.get_int("time-mask-max-frames", 10))


class PermuteComponent(Component):
    """y[:, i] = x[:, column_map[i]]; column-map must be a permutation. Kaldi's
    src/nnet3/nnet-simple-component.cc (`PermuteComponent::Read/Write/InitFromConfig`)."""
    type_name = "PermuteComponent"
    FIELDS = (field("<ColumnMap>", Kind.INT_VECTOR),)

    def input_dim(self) -> int:
        return len(self.column_map)

    def output_dim(self) -> int:
        return len(self.column_map)

    def check(self) -> None:
        self.require(len(self.column_map) > 0 and sorted(self.column_map) == list(range(len(self.column_map))),
                     "column-map does not represent a permutation")

    def info_items(self):
        head = " ".join(str(i) for i in self.column_map[:5]) + (" ..." if len(self.column_map) > 5 else "")
        return [("dim", len(self.column_map)), ("column-map", f"[ {head} ]")]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> PermuteComponent:
        text = cfg.get_str("column-map")
        try:
            column_map = [int(v) for v in text.split(",") if v]
        except ValueError:
            column_map = []
        require(cfg, cls.type_name, bool(column_map), f"bad column-map={text}")
        return cls(column_map=column_map)
