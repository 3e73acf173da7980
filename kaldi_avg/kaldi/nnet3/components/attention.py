"""RestrictedAttentionComponent: multi-head self-attention over a fixed window of frames, as
Kaldi's src/nnet3/nnet-attention-component.{h,cc} (`Write`, `Read`, `InitFromConfig`, `Info`,
`Check`, `GetInputIndexes`, `IsComputable`, `ZeroStats`) and src/nnet3/attention.{h,cc}
(`AttentionForward`) define it; the xconfig `attention-*-layer`s use it (docs/kaldi-formats.md
4.24, 5.15). It has no parameters: the affine component before it produces keys, values and
queries.

The window of output frame t is the input at t + (o - L) * time-stride, o = 0 .. C-1, with
C = L + 1 + R context positions (L, R = num-left-inputs, num-right-inputs). That splicing is
what `input_descriptor` returns, so the graph executor and the context computation see it as
the node's input. Only the offsets within [-L_req, R_req] (the num-*-inputs-required) are
required (Kaldi's IsComputable; they alone make the model context, docs/kaldi-formats.md 3.6);
the others are optional, read under IfDefined: where such a frame is not computable, Kaldi pads
the input with a zero row (key and value 0), which still takes part in the softmax with the
query's position term alone as its score.

Layout (`Write`):
```
"<RestrictedAttentionComponent> " "<NumHeads> " i32 "<KeyDim> " i32 "<ValueDim> " i32
"<NumLeftInputs> " i32 "<NumRightInputs> " i32 "<TimeStride> " i32
"<NumLeftInputsRequired> " i32 "<NumRightInputsRequired> " i32 "<OutputContext> " bool
"<KeyScale> " f32 "<StatsCount> " f64 "<EntropyStats> " DV "<PosteriorStats> " DM
"</RestrictedAttentionComponent> "
```
The statistics are empty until Kaldi's training first stores some (then num-heads entries and
num-heads x C); kaldi-avg keeps them as read and zeroes them where nnet3-train does.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigLine
from ..descriptor import Descriptor, splice
from .base import Component, Kind, field
from .initializers import require


class RestrictedAttentionComponent(Component):
    type_name = "RestrictedAttentionComponent"
    FIELDS = (
        field("<NumHeads>", Kind.I32, 1),
        field("<KeyDim>", Kind.I32),
        field("<ValueDim>", Kind.I32),
        field("<NumLeftInputs>", Kind.I32),
        field("<NumRightInputs>", Kind.I32),
        field("<TimeStride>", Kind.I32, 1),
        field("<NumLeftInputsRequired>", Kind.I32, lambda v: v["num_left_inputs"]),
        field("<NumRightInputsRequired>", Kind.I32, lambda v: v["num_right_inputs"]),
        field("<OutputContext>", Kind.BOOL, True),
        field("<KeyScale>", Kind.F32, lambda v: 1.0 / math.sqrt(v["key_dim"])),
        field("<StatsCount>", Kind.F64, 0.0),
        field("<EntropyStats>", Kind.DOUBLE_VECTOR, lambda v: np.zeros(0)),
        field("<PosteriorStats>", Kind.DOUBLE_MATRIX, lambda v: np.zeros((0, 0))),
    )

    @property
    def context_dim(self) -> int:
        """C: the number of frames each output attends to."""
        return self.num_left_inputs + 1 + self.num_right_inputs

    def input_dim_per_head(self) -> int:
        """[key (K), value (V), query (K + C)]: the query's last C entries are its position terms."""
        return 2 * self.key_dim + self.value_dim + self.context_dim

    def output_dim_per_head(self) -> int:
        """[weighted values (V), and with output-context the C softmax weights]."""
        return self.value_dim + (self.context_dim if self.output_context else 0)

    def input_dim(self) -> int:
        return self.num_heads * self.input_dim_per_head()

    def output_dim(self) -> int:
        return self.num_heads * self.output_dim_per_head()

    def input_descriptor(self, d: Descriptor) -> Descriptor:
        """The C window frames, in order; the optional ones are zeros where not computable."""
        stride = self.time_stride
        window = [o * stride for o in range(-self.num_left_inputs, self.num_right_inputs + 1)]
        required = {o * stride for o in range(-self.num_left_inputs_required, self.num_right_inputs_required + 1)}
        return splice(d, window, required)

    def zero_stats(self) -> None:
        """Kaldi's ZeroStats: the statistics keep their dimensions."""
        self.stats_count = 0.0
        self.entropy_stats = np.zeros_like(self.entropy_stats)
        self.posterior_stats = np.zeros_like(self.posterior_stats)

    def check(self) -> None:
        L, R = self.num_left_inputs, self.num_right_inputs
        self.require(self.num_heads > 0 and self.key_dim > 0 and self.value_dim > 0,
                     "num-heads, key-dim and value-dim must be > 0")
        self.require(L >= 0 and R >= 0 and L + R > 0,
                     f"num-left-inputs={L} and num-right-inputs={R} must be >= 0, not both 0")
        self.require(self.time_stride > 0, f"time-stride must be > 0, got {self.time_stride}")
        self.require(0 <= self.num_left_inputs_required <= L and 0 <= self.num_right_inputs_required <= R,
                     "num-left/right-inputs-required must be in [0, num-left/right-inputs]")
        self.require(0.0 < self.key_scale <= 1.0, f"key-scale must be in (0, 1], got {self.key_scale}")
        self.require(self.stats_count >= 0.0, "stats-count must be >= 0")
        self.require(self.entropy_stats.size in (0, self.num_heads),
                     f"entropy-stats has {self.entropy_stats.size} entries, expected 0 or num-heads")
        self.require(self.posterior_stats.size == 0
                     or self.posterior_stats.shape == (self.num_heads, self.context_dim),
                     f"posterior-stats has shape {self.posterior_stats.shape}, expected "
                     f"num-heads x context-dim")

    def info_items(self):
        return super().info_items() + [
            ("num-heads", self.num_heads), ("time-stride", self.time_stride),
            ("key-dim", self.key_dim), ("value-dim", self.value_dim),
            ("num-left-inputs", self.num_left_inputs), ("num-right-inputs", self.num_right_inputs),
            ("context-dim", self.context_dim),
            ("num-left-inputs-required", self.num_left_inputs_required),
            ("num-right-inputs-required", self.num_right_inputs_required),
            ("output-context", self.output_context), ("key-scale", self.key_scale)]

    def info(self) -> str:
        """With statistics, Kaldi appends the average entropy per head and the average weight of
        each position for the first 5 heads, each number followed by ','."""
        if self.stats_count == 0.0:
            return super().info()
        count = self.stats_count
        line = super().info() + ", entropy=" + "".join("%g," % (x / count) for x in self.entropy_stats)
        for h in range(min(self.num_heads, 5)):
            row = self.posterior_stats[h] if self.posterior_stats.size else ()   # Kaldi: nothing printed
            line += f" posterior-stats[{h}]=" + "".join("%g," % (x / count) for x in row)
        return line + " stats-count=%g" % count

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> RestrictedAttentionComponent:
        """key-dim, value-dim, num-left-inputs, num-right-inputs required; num-heads (1),
        time-stride (1), num-left/right-inputs-required (< 0: all of them, the default),
        output-context (true), key-scale (< 0: 1/sqrt(key-dim), the default)."""
        missing = [k for k in ("key-dim", "value-dim", "num-left-inputs", "num-right-inputs")
                   if not cfg.has(k)]
        require(cfg, cls.type_name, not missing, "All of the values key-dim, value-dim, "
                "num-left-inputs and num-right-inputs must be defined")
        key_dim, left, right = (cfg.get_int(k) for k in ("key-dim", "num-left-inputs", "num-right-inputs"))
        left_required = cfg.get_int("num-left-inputs-required", -1)
        right_required = cfg.get_int("num-right-inputs-required", -1)
        key_scale = cfg.get_float("key-scale", -1.0)
        if key_scale < 0.0 and key_dim > 0:   # (key-dim <= 0 is refused by `check`)
            key_scale = 1.0 / math.sqrt(key_dim)
        return cls(num_heads=cfg.get_int("num-heads", 1), key_dim=key_dim,
                   value_dim=cfg.get_int("value-dim"), num_left_inputs=left, num_right_inputs=right,
                   time_stride=cfg.get_int("time-stride", 1),
                   num_left_inputs_required=left_required if left_required >= 0 else left,
                   num_right_inputs_required=right_required if right_required >= 0 else right,
                   output_context=cfg.get_bool("output-context", True),
                   key_scale=key_scale)
