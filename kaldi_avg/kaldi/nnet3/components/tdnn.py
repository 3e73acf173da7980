"""TdnnComponent: an affine transform of the input spliced over fixed time offsets, as
Kaldi's src/nnet3/nnet-tdnn-component.cc (`TdnnComponent::Write/Read/InitFromConfig`,
`Propagate`) defines it; the xconfig `tdnnf-layer` uses it (docs/kaldi-formats.md 4.3-4.6 for
the shared header and natural-gradient fields).

Output at frame t: y(t) = W [x(t+o_1); ...; x(t+o_k)] + b, W is out x (k * in), the bias
optional (use-bias=false leaves <BiasParams> an empty vector). The splicing is what
`input_descriptor` returns, so the graph executor and the context computation see it as the
node's input.

Layout:
```
UpdatableComponent header (4.1)
"<TimeOffsets> " int32 vector   "<LinearParams> " FM   "<BiasParams> " FV (empty: no bias)
"<OrthonormalConstraint> " f32  "<UseNaturalGradient> " bool  "<NumSamplesHistory> " f32
"<AlphaInOut> " f32 f32  "<RankInOut> " i32 i32  "</TdnnComponent> "
```
(Kaldi's reader also takes a single `<Alpha>` of an unreleased format; not accepted here.)
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigLine
from ..descriptor import Descriptor, splice
from .base import UPDATABLE_HEADER, Field, Kind, UpdatableComponent, field, matrix_stats, vector_stats
from .initializers import gaussian, learning_rate_options, require


class TdnnComponent(UpdatableComponent):
    type_name = "TdnnComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<TimeOffsets>", Kind.INT_VECTOR),
        field("<LinearParams>", Kind.MATRIX),
        field("<BiasParams>", Kind.VECTOR),
        field("<OrthonormalConstraint>", Kind.F32, 0.0),
        field("<UseNaturalGradient>", Kind.BOOL, True),
        field("<NumSamplesHistory>", Kind.F32, 2000.0),
        Field("<AlphaInOut>", Kind.F32, ("alpha_in", "alpha_out"), (4.0, 4.0)),
        Field("<RankInOut>", Kind.I32, ("rank_in", "rank_out"),
              lambda v: (min(20, (v["linear_params"].shape[1] + 1) // 2),
                         min(80, (v["linear_params"].shape[0] + 1) // 2))),
    )
    # The natural-gradient update period is fixed at 4 in Kaldi (not stored, not configurable).
    UPDATE_PERIOD = 4

    def params(self) -> dict[str, np.ndarray]:
        """The bias is a parameter only when there is one (use-bias=false: empty)."""
        names = ("linear_params", "bias_params") if self.has_bias else ("linear_params",)
        return {a: getattr(self, a) for a in names}

    @property
    def has_bias(self) -> bool:
        return np.size(self.bias_params) > 0

    def input_dim(self) -> int:
        return int(np.shape(self.linear_params)[1]) // max(1, len(self.time_offsets))

    def output_dim(self) -> int:
        return int(np.shape(self.linear_params)[0])

    def input_descriptor(self, d: Descriptor) -> Descriptor:
        """What W multiplies: the node's input at each time offset, in order."""
        return splice(d, self.time_offsets)

    def check(self) -> None:
        super().check()
        rows, cols = np.shape(self.linear_params)
        k = len(self.time_offsets)
        self.require(k > 0 and len(set(self.time_offsets)) == k,
                     f"time-offsets {list(self.time_offsets)} must be non-empty and distinct")
        self.require(rows > 0 and cols > 0 and cols % k == 0,
                     f"linear-params shape {(rows, cols)} is not out x ({k} * input-dim)")
        self.require(np.size(self.bias_params) in (0, rows),
                     f"bias-params has {np.size(self.bias_params)} entries, expected 0 or {rows}")
        for attr in ("rank_in", "rank_out"):
            self.require(getattr(self, attr) > 0, f"{attr} must be > 0")
        self.require(self.num_samples_history > 0, "num_samples_history must be > 0")
        self.require(self.alpha_in >= 0 and self.alpha_out >= 0, "alpha must be >= 0")

    def info_items(self):
        items = super().info_items()
        if self.orthonormal_constraint != 0.0:
            items.append(("orthonormal-constraint", self.orthonormal_constraint))
        items.append(("time-offsets", ",".join(map(str, self.time_offsets))))
        items += matrix_stats("linear-params", self.linear_params)
        items += vector_stats("bias", self.bias_params) if self.has_bias else [("has-bias", False)]
        if not self.use_natural_gradient:
            return items + [("use-natural-gradient", False)]
        return items + [("rank-in", self.rank_in), ("rank-out", self.rank_out),
                        ("num-samples-history", self.num_samples_history),
                        ("update-period", self.UPDATE_PERIOD),
                        ("alpha-in", self.alpha_in), ("alpha-out", self.alpha_out)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> TdnnComponent:
        """time-offsets, input-dim, output-dim required; W ~ N(0, param-stddev^2) with default
        1/sqrt(input-dim * #offsets); b ~ N(bias-mean, bias-stddev^2) unless use-bias=false."""
        values = learning_rate_options(cfg)
        text = cfg.get_str("time-offsets")
        try:
            offsets = [int(s) for s in text.split(",")]
        except ValueError:
            offsets = []
        in_dim, out_dim = cfg.get_int("input-dim"), cfg.get_int("output-dim")
        require(cfg, cls.type_name, in_dim > 0 and out_dim > 0 and offsets,
                "there is a problem with time-offsets, input-dim or output-dim")
        require(cfg, cls.type_name, len(set(offsets)) == len(offsets), "repeated time-offsets")
        spliced = in_dim * len(offsets)
        param_stddev = cfg.get_float("param-stddev", -1.0)
        if param_stddev < 0:
            param_stddev = 1.0 / math.sqrt(spliced)
        bias_stddev, bias_mean = cfg.get_float("bias-stddev", 1.0), cfg.get_float("bias-mean", 0.0)
        use_bias = cfg.get_bool("use-bias", True)
        rank_in, rank_out = cfg.get_int("rank-in", -1), cfg.get_int("rank-out", -1)
        return cls(**values, time_offsets=offsets,
                   linear_params=gaussian(rng, (out_dim, spliced), param_stddev),
                   bias_params=gaussian(rng, out_dim, bias_stddev, bias_mean) if use_bias
                   else np.zeros(0, np.float32),
                   orthonormal_constraint=cfg.get_float("orthonormal-constraint", 0.0),
                   use_natural_gradient=cfg.get_bool("use-natural-gradient", True),
                   num_samples_history=cfg.get_float("num-samples-history", 2000.0),
                   alpha_in=cfg.get_float("alpha-in", 4.0), alpha_out=cfg.get_float("alpha-out", 4.0),
                   rank_in=rank_in if rank_in >= 0 else min(20, (spliced + 1) // 2),
                   rank_out=rank_out if rank_out >= 0 else min(80, (out_dim + 1) // 2))
