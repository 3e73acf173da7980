"""The fused cell updates of xconfig's fast GRU layers (docs/kaldi-formats.md 4.20):
GruNonlinearityComponent (fast-gru, fast-pgru, fast-norm-pgru) and
OutputGruNonlinearityComponent (fast-opgru, fast-norm-opgru). Both output [h_t, c_t] (2C) and
hold one parameter, W^h; their tanh statistics are written as averages (<ValueAvg>,
<DerivAvg>) with the <Count> they were divided by.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigLine
from .base import UPDATABLE_HEADER, Field, Kind, UpdatableComponent, field, matrix_stats, summarize_vector, vector_stats
from .initializers import gaussian, learning_rate_options, require


def _zero_stats(values) -> np.ndarray:
    return np.zeros(values["cell_dim"], np.float32)


# The tanh statistics and self-repair settings, between W^h and the natural-gradient options.
_TANH_STATS = (
    field("<ValueAvg>", Kind.VECTOR, _zero_stats),
    field("<DerivAvg>", Kind.VECTOR, _zero_stats),
    field("<SelfRepairTotal>", Kind.F64, 0.0),
    field("<Count>", Kind.F64, 0.0),
    field("<SelfRepairThreshold>", Kind.F32, 0.2),
    field("<SelfRepairScale>", Kind.F32, 1e-05),
)


class _GruCellComponent(UpdatableComponent):
    """What both fused GRU cells share: output [h_t, c_t], W^h, tanh statistics."""
    PARAMS = ("w_h",)

    def output_dim(self) -> int:
        return 2 * self.cell_dim

    def check(self) -> None:
        super().check()
        C = self.cell_dim
        self.require(C > 0, f"cell-dim must be > 0, got {C}")
        self.require(self.self_repair_threshold >= 0 and self.self_repair_scale >= 0,
                     "self-repair-threshold and self-repair-scale must be >= 0")
        for attr in ("value_avg", "deriv_avg"):
            shape = np.shape(getattr(self, attr))
            self.require(shape == (C,), f"{attr} must have cell-dim={C} entries, got {shape}")
        self.require(self.count >= 0, "count must be >= 0")

    def stats_items(self):
        """Kaldi's Info() after the parameter summary."""
        items = [("self-repair-threshold", self.self_repair_threshold),
                 ("self-repair-scale", self.self_repair_scale)]
        if self.count > 0:
            items += [("count", float("%.3g" % self.count)),
                      ("self-repaired-proportion", self.self_repair_total / (self.count * self.cell_dim)),
                      ("value-avg", summarize_vector(self.value_avg)),
                      ("deriv-avg", summarize_vector(self.deriv_avg))]
        return items

    @staticmethod
    def repair_options(cfg: ConfigLine) -> dict:
        return dict(self_repair_threshold=cfg.get_float("self-repair-threshold", 0.2),
                    self_repair_scale=cfg.get_float("self-repair-scale", 1e-05))

    @staticmethod
    def config_cell_dim(cfg: ConfigLine, type_name: str) -> int:
        cell_dim = cfg.get_int("cell-dim", -1)
        require(cfg, type_name, cell_dim > 0, f"cell-dim > 0 is required for {type_name}")
        return cell_dim


class GruNonlinearityComponent(_GruCellComponent):
    """Input [z_t (C), r_t (R), hpart_t (C), c_{t-1} (C), s_{t-1} (R)], or without projection
    (R = C) [z_t, r_t, hpart_t, y_{t-1}] (4C); h_t = tanh(hpart_t + W^h (r_t * s_{t-1})),
    c_t = (1 - z_t) h_t + z_t c_{t-1}; W^h is C x R."""
    type_name = "GruNonlinearityComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<CellDim>", Kind.I32),
        field("<RecurrentDim>", Kind.I32),
        field("<w_h>", Kind.MATRIX, attr="w_h"),
        *_TANH_STATS,
        field("<Alpha>", Kind.F32, 4.0),
        Field("<RankInOut>", Kind.I32, ("rank_in", "rank_out"), (20, 80)),
        field("<UpdatePeriod>", Kind.I32, 4),
    )

    def input_dim(self) -> int:
        C, R = self.cell_dim, self.recurrent_dim
        return 4 * C if R == C else 3 * C + 2 * R

    def check(self) -> None:
        super().check()
        C, R = self.cell_dim, self.recurrent_dim
        self.require(0 < R <= C, f"recurrent-dim must be in [1, cell-dim={C}], got {R}")
        self.require(np.shape(self.w_h) == (C, R), f"w_h must be {C} x {R}, got {np.shape(self.w_h)}")

    def info_items(self):
        return (super().info_items() + [("cell-dim", self.cell_dim), ("recurrent-dim", self.recurrent_dim)]
                + matrix_stats("w_h", self.w_h) + self.stats_items()
                + [("alpha", self.alpha), ("rank-in", self.rank_in), ("rank-out", self.rank_out),
                   ("update-period", self.update_period)])

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> GruNonlinearityComponent:
        """recurrent-dim defaults to cell-dim (no projection); W^h ~ N(0, param-stddev^2) with
        default 1/sqrt(cell-dim); natural gradient alpha 4, ranks 20/80, update period 4."""
        values = learning_rate_options(cfg)
        cell_dim = cls.config_cell_dim(cfg, cls.type_name)
        recurrent_dim = cfg.get_int("recurrent-dim", -1)
        if recurrent_dim < 0:
            recurrent_dim = cell_dim
        require(cfg, cls.type_name, 0 < recurrent_dim <= cell_dim,
                "Invalid values for cell-dim and recurrent-dim")
        param_stddev = cfg.get_float("param-stddev", 1.0 / math.sqrt(cell_dim))
        return cls(**values, **cls.repair_options(cfg), cell_dim=cell_dim, recurrent_dim=recurrent_dim,
                   w_h=gaussian(rng, (cell_dim, recurrent_dim), param_stddev),
                   alpha=cfg.get_float("alpha", 4.0), rank_in=cfg.get_int("rank-in", 20),
                   rank_out=cfg.get_int("rank-out", 80), update_period=cfg.get_int("update-period", 4))


class OutputGruNonlinearityComponent(_GruCellComponent):
    """Input [z_t, hpart_t, c_{t-1}] (3C); h_t = tanh(hpart_t + w^h * c_{t-1}) with w^h a
    C-vector (elementwise), c_t = (1 - z_t) h_t + z_t c_{t-1}."""
    type_name = "OutputGruNonlinearityComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<CellDim>", Kind.I32),
        field("<w_h>", Kind.VECTOR, attr="w_h"),
        *_TANH_STATS,
        field("<Alpha>", Kind.F32, 4.0),
        field("<Rank>", Kind.I32, 8),
        field("<UpdatePeriod>", Kind.I32, 10),
    )

    def input_dim(self) -> int:
        return 3 * self.cell_dim

    def check(self) -> None:
        super().check()
        self.require(np.shape(self.w_h) == (self.cell_dim,),
                     f"w_h must have cell-dim={self.cell_dim} entries, got {np.shape(self.w_h)}")

    def info_items(self):
        return (super().info_items() + [("cell-dim", self.cell_dim)] + vector_stats("w_h", self.w_h)
                + self.stats_items()
                + [("alpha", self.alpha), ("rank", self.rank), ("update-period", self.update_period)])

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> OutputGruNonlinearityComponent:
        """w^h ~ N(param-mean, param-stddev^2), defaults 0 and 1; natural gradient alpha 4,
        rank 8, update period 10."""
        values = learning_rate_options(cfg)
        cell_dim = cls.config_cell_dim(cfg, cls.type_name)
        w_h = gaussian(rng, cell_dim, cfg.get_float("param-stddev", 1.0), cfg.get_float("param-mean", 0.0))
        return cls(**values, **cls.repair_options(cfg), cell_dim=cell_dim, w_h=w_h,
                   alpha=cfg.get_float("alpha", 4.0), rank=cfg.get_int("rank", 8),
                   update_period=cfg.get_int("update-period", 10))
