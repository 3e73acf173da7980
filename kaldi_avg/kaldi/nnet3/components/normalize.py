"""NormalizeComponent and BatchNormComponent (docs/kaldi-formats.md 4.9, 4.10)."""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import Component, Kind, SameDimComponent, field, legacy, optional
from .initializers import require


def _check_blocks(comp: Component) -> None:
    comp.require(comp.dim > 0, f"dim must be > 0, got {comp.dim}")
    comp.require(comp.block_dim > 0 and comp.dim % comp.block_dim == 0,
                 f"block-dim {comp.block_dim} must be > 0 and divide dim {comp.dim}")
    comp.require(comp.target_rms > 0, f"target-rms must be > 0, got {comp.target_rms}")


class NormalizeComponent(Component):
    """Scales each block of block-dim inputs to RMS target-rms; with add-log-stddev one more
    output per block carries the log of the (floored) input RMS."""
    type_name = "NormalizeComponent"
    FIELDS = (
        field("<InputDim>", Kind.I32, attr="dim", aliases=("<Dim>",)),
        optional("<BlockDim>", Kind.I32, lambda v: v["dim"], when=lambda c: c.block_dim != c.dim),
        optional("<TargetRms>", Kind.F32, 1.0),
        optional("<AddLogStddev>", Kind.BOOL, False),
        legacy("<ValueAvg>", Kind.VECTOR),
        legacy("<DerivAvg>", Kind.VECTOR),
        legacy("<Count>", Kind.F64),
    )

    def input_dim(self) -> int:
        return self.dim

    def output_dim(self) -> int:
        extra = self.dim // self.block_dim if self.add_log_stddev and self.block_dim > 0 else 0
        return self.dim + extra

    def check(self) -> None:
        _check_blocks(self)

    def info_items(self):
        items = super().info_items() + [("target-rms", self.target_rms),
                                        ("add-log-stddev", self.add_log_stddev)]
        return items + ([("block-dim", self.block_dim)] if self.block_dim != self.dim else [])

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> NormalizeComponent:
        # Kaldi reads dim=, or input-dim= only when dim= is absent.
        dim = cfg.get_int("dim") if cfg.has("dim") else cfg.get_int("input-dim")
        return cls(dim=dim, block_dim=cfg.get_int("block-dim", dim),
                   target_rms=cfg.get_float("target-rms", 1.0),
                   add_log_stddev=cfg.get_bool("add-log-stddev", False))


class BatchNormComponent(SameDimComponent):
    """Per block of block-dim columns. Decoders force test mode, where
    y = (x - mean) * (var + epsilon)^-0.5 * target-rms with the stored statistics; Kaldi invents
    random statistics when count is 0, so an exported model needs real ones (`set_stats`)."""
    type_name = "BatchNormComponent"
    FIELDS = (
        field("<Dim>", Kind.I32),
        field("<BlockDim>", Kind.I32, lambda v: v["dim"]),
        field("<Epsilon>", Kind.F32, 1e-3),
        field("<TargetRms>", Kind.F32, 1.0),
        field("<TestMode>", Kind.BOOL, False),
        field("<Count>", Kind.F64, 0.0),
        field("<StatsMean>", Kind.VECTOR, lambda v: np.zeros(v["block_dim"], np.float32)),
        field("<StatsVar>", Kind.VECTOR, lambda v: np.zeros(v["block_dim"], np.float32)),
    )

    def set_stats(self, count: float, mean, var) -> None:
        """Stores the statistics of `count` frames: per-dimension mean and (biased) variance,
        each of length block-dim (the averages over the blocks when block-dim < dim). Kaldi
        floors the variance at 0, so round-off below 0 is harmless."""
        old = (self.count, self.stats_mean, self.stats_var)
        self.count = float(count)
        self.stats_mean = np.array(mean, np.float32)
        self.stats_var = np.array(var, np.float32)
        try:
            self.validate()
        except ValueError:
            self.count, self.stats_mean, self.stats_var = old
            raise

    def check(self) -> None:
        _check_blocks(self)
        self.require(self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")
        self.require(self.count >= 0, f"count must be >= 0, got {self.count}")
        for attr in ("stats_mean", "stats_var"):
            n = np.size(getattr(self, attr))
            self.require(n == self.block_dim, f"{attr} has {n} entries, expected {self.block_dim}")
        self.require(not (self.test_mode and self.count == 0),
                     "test mode with count 0: Kaldi would use random statistics")

    def info_items(self):
        return [("dim", self.dim), ("block-dim", self.block_dim), ("epsilon", self.epsilon),
                ("target-rms", self.target_rms), ("count", self.count),
                ("test-mode", self.test_mode)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> BatchNormComponent:
        dim = cfg.get_int("dim")
        block_dim = cfg.get_int("block-dim", dim)
        require(cfg, cls.type_name, dim > 0 and block_dim > 0, "dim and block-dim must be > 0")
        return cls(dim=dim, block_dim=block_dim,
                   epsilon=cfg.get_float("epsilon", 1e-3),
                   target_rms=cfg.get_float("target-rms", 1.0),
                   test_mode=cfg.get_bool("test-mode", False))
