"""Affine and linear components (docs/kaldi-formats.md 4.3-4.6): y = W x (+ b), W is out x in."""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigLine
from .base import (
    UPDATABLE_HEADER,
    Component,
    Field,
    Kind,
    UpdatableComponent,
    field,
    legacy,
    matrix_stats,
    optional,
    vector_stats,
)
from .initializers import gaussian, learning_rate_options, natural_gradient_options, read_matrix_file, require

_ORTHONORMAL = optional("<OrthonormalConstraint>", Kind.F32, 0.0,
                        when=lambda c: c.orthonormal_constraint != 0.0)


def _check_affine_shapes(comp: Component) -> None:
    w, b = np.shape(comp.linear_params), np.shape(comp.bias_params)
    comp.require(w[0] > 0 and w[1] > 0, f"linear-params is empty (shape {w})")
    comp.require(b == (w[0],), f"bias-params has {b[0]} entries but linear-params has {w[0]} rows")


def _check_natural_gradient(comp: Component, *ranks: str) -> None:
    """What Kaldi's OnlineNaturalGradient setters assert."""
    for attr in ranks + ("update_period",):
        comp.require(getattr(comp, attr) > 0, f"{attr} must be > 0, got {getattr(comp, attr)}")
    comp.require(comp.num_samples_history > 0, "num_samples_history must be > 0")
    comp.require(comp.alpha >= 0, "alpha must be >= 0")


def _checked_dims(cfg: ConfigLine, type_name: str, out_dim: int, in_dim: int) -> None:
    """With `matrix=`, input-dim/output-dim are optional but must agree with the matrix."""
    for key, want in (("input-dim", in_dim), ("output-dim", out_dim)):
        if cfg.has(key):
            got = cfg.get_int(key)
            require(cfg, type_name, got == want, f"{key}={got} does not match the matrix ({want})")


def _random_dims(cfg: ConfigLine, type_name: str) -> tuple[int, int]:
    in_dim, out_dim = cfg.get_int("input-dim"), cfg.get_int("output-dim")
    require(cfg, type_name, in_dim > 0 and out_dim > 0, "input-dim and output-dim must be > 0")
    return in_dim, out_dim


def _affine_from_config(cfg: ConfigLine, type_name: str, rng: np.random.Generator,
                        with_bias_mean: bool) -> dict:
    """W and b from `matrix=` (out x (in+1), last column = bias) or random: W ~ N(0, param-stddev^2)
    (default 1/sqrt(in)), b ~ N(bias-mean, bias-stddev^2) (defaults 0, 1)."""
    if cfg.has("matrix"):
        m = read_matrix_file(cfg, type_name)
        require(cfg, type_name, m.shape[0] > 0 and m.shape[1] >= 2,
                f"matrix= must have rows and at least 2 columns (last = bias), got {m.shape}")
        _checked_dims(cfg, type_name, m.shape[0], m.shape[1] - 1)
        return dict(linear_params=m[:, :-1], bias_params=m[:, -1])
    in_dim, out_dim = _random_dims(cfg, type_name)
    param_stddev = cfg.get_float("param-stddev", 1.0 / math.sqrt(in_dim))
    bias_stddev = cfg.get_float("bias-stddev", 1.0)
    bias_mean = cfg.get_float("bias-mean", 0.0) if with_bias_mean else 0.0
    require(cfg, type_name, param_stddev >= 0 and bias_stddev >= 0, "stddevs must be >= 0")
    return dict(linear_params=gaussian(rng, (out_dim, in_dim), param_stddev),
                bias_params=gaussian(rng, out_dim, bias_stddev, bias_mean))


class AffineComponent(UpdatableComponent):
    type_name = "AffineComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<LinearParams>", Kind.MATRIX),
        field("<BiasParams>", Kind.VECTOR),
        legacy("<IsGradient>", Kind.BOOL, attr="is_gradient"),
        _ORTHONORMAL,
    )
    PARAMS = ("linear_params", "bias_params")

    def input_dim(self) -> int:
        return int(np.shape(self.linear_params)[1])

    def output_dim(self) -> int:
        return int(np.shape(self.linear_params)[0])

    def check(self) -> None:
        super().check()
        _check_affine_shapes(self)

    def info_items(self):
        items = super().info_items()
        if self.orthonormal_constraint != 0.0:
            items.append(("orthonormal-constraint", self.orthonormal_constraint))
        return items + matrix_stats("linear-params", self.linear_params) + vector_stats(
            "bias", self.bias_params)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> AffineComponent:
        return cls(**learning_rate_options(cfg),
                   **_affine_from_config(cfg, cls.type_name, rng, with_bias_mean=False),
                   orthonormal_constraint=cfg.get_float("orthonormal-constraint", 0.0))


class NaturalGradientAffineComponent(AffineComponent):
    type_name = "NaturalGradientAffineComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<LinearParams>", Kind.MATRIX),
        field("<BiasParams>", Kind.VECTOR),
        field("<RankIn>", Kind.I32, lambda v: min(20, (v["linear_params"].shape[1] + 1) // 2)),
        field("<RankOut>", Kind.I32, lambda v: min(80, (v["linear_params"].shape[0] + 1) // 2)),
        _ORTHONORMAL,
        field("<UpdatePeriod>", Kind.I32, 4),
        field("<NumSamplesHistory>", Kind.F32, 2000.0),
        field("<Alpha>", Kind.F32, 4.0),
        legacy("<MaxChangePerSample>", Kind.F32),
        legacy("<IsGradient>", Kind.BOOL, attr="is_gradient"),
        legacy("<UpdateCount>", Kind.F64),
        legacy("<ActiveScalingCount>", Kind.F64),
        legacy("<MaxChangeScaleStats>", Kind.F64),
    )
    END_ALIASES = ("<NaturalGradientAffineComponent>",)

    def check(self) -> None:
        super().check()
        _check_natural_gradient(self, "rank_in", "rank_out")

    def info_items(self):
        return super().info_items() + [
            ("rank-in", self.rank_in), ("rank-out", self.rank_out),
            ("num-samples-history", self.num_samples_history),
            ("update-period", self.update_period), ("alpha", self.alpha)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> NaturalGradientAffineComponent:
        values = dict(**learning_rate_options(cfg),
                      **_affine_from_config(cfg, cls.type_name, rng, with_bias_mean=True),
                      orthonormal_constraint=cfg.get_float("orthonormal-constraint", 0.0))
        out_dim, in_dim = values["linear_params"].shape
        return cls(**values, **natural_gradient_options(cfg, in_dim, out_dim))


class FixedAffineComponent(Component):
    """Not updatable (LDA-like transforms, IDCT): averaging and scaling leave it alone."""
    type_name = "FixedAffineComponent"
    FIELDS = (field("<LinearParams>", Kind.MATRIX), field("<BiasParams>", Kind.VECTOR))

    input_dim = AffineComponent.input_dim
    output_dim = AffineComponent.output_dim

    def check(self) -> None:
        _check_affine_shapes(self)

    def info_items(self):
        return super().info_items() + matrix_stats("linear-params", self.linear_params) + \
            vector_stats("bias", self.bias_params)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> FixedAffineComponent:
        """`matrix=<out x (in+1) file>` (nothing else on the line), or input-dim/output-dim with
        N(0, 1) values, for testing (Kaldi's ref.config)."""
        if cfg.has("matrix"):
            m = read_matrix_file(cfg, cls.type_name)
            require(cfg, cls.type_name, m.shape[0] > 0 and m.shape[1] >= 2,
                    f"matrix= must have rows and at least 2 columns (last = bias), got {m.shape}")
        else:
            in_dim, out_dim = _random_dims(cfg, cls.type_name)
            m = gaussian(rng, (out_dim, in_dim + 1), 1.0)
        return cls(linear_params=m[:, :-1], bias_params=m[:, -1])


class LinearComponent(UpdatableComponent):
    """y = W x without bias (xconfig's bottleneck `O.linear`)."""
    type_name = "LinearComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<Params>", Kind.MATRIX, attr="linear_params"),   # W, out x in
        _ORTHONORMAL,
        field("<UseNaturalGradient>", Kind.BOOL, True),
        Field("<RankInOut>", Kind.I32, ("rank_in", "rank_out"),
              lambda v: (min(20, (v["linear_params"].shape[1] + 1) // 2),
                         min(80, (v["linear_params"].shape[0] + 1) // 2))),
        field("<Alpha>", Kind.F32, 4.0),
        field("<NumSamplesHistory>", Kind.F32, 2000.0),
        field("<UpdatePeriod>", Kind.I32, 4),
    )
    PARAMS = ("linear_params",)

    def input_dim(self) -> int:
        return int(np.shape(self.linear_params)[1])

    def output_dim(self) -> int:
        return int(np.shape(self.linear_params)[0])

    def check(self) -> None:
        super().check()
        rows, cols = np.shape(self.linear_params)
        self.require(rows > 0 and cols > 0, f"linear-params is empty (shape {(rows, cols)})")
        _check_natural_gradient(self, "rank_in", "rank_out")

    def info_items(self):
        items = super().info_items() + matrix_stats("params", self.linear_params)
        if self.orthonormal_constraint != 0.0:
            items.append(("orthonormal-constraint", self.orthonormal_constraint))
        return items + [("use-natural-gradient", self.use_natural_gradient),
                        ("rank-in", self.rank_in), ("rank-out", self.rank_out),
                        ("num-samples-history", self.num_samples_history),
                        ("update-period", self.update_period), ("alpha", self.alpha)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> LinearComponent:
        """`matrix=<out x in file>` (no bias column) or random with param-stddev (1/sqrt(in))."""
        values = learning_rate_options(cfg)
        if cfg.has("matrix"):
            w = read_matrix_file(cfg, cls.type_name)
            require(cfg, cls.type_name, w.size > 0, "matrix= is empty")
            _checked_dims(cfg, cls.type_name, *w.shape)
        else:
            in_dim, out_dim = _random_dims(cfg, cls.type_name)
            param_stddev = cfg.get_float("param-stddev", 1.0 / math.sqrt(in_dim))
            require(cfg, cls.type_name, param_stddev >= 0, "param-stddev must be >= 0")
            w = gaussian(rng, (out_dim, in_dim), param_stddev)
        return cls(**values, linear_params=w, **natural_gradient_options(cfg, w.shape[1], w.shape[0]),
                   use_natural_gradient=cfg.get_bool("use-natural-gradient", True),
                   orthonormal_constraint=cfg.get_float("orthonormal-constraint", 0.0))
