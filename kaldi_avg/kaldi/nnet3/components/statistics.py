"""StatisticsExtractionComponent and StatisticsPoolingComponent: the moving-window means and
standard deviations of the xconfig `stats-layer` (x-vectors, speech activity detection), as
Kaldi's src/nnet3/nnet-general-component.{h,cc} define them (`Read`, `Write`, `InitFromConfig`,
`Check`, `GetInputIndexes`, `IsComputable`, `Propagate`, `Backprop`); docs/kaldi-formats.md 4.25.

Both are "general" components: an output frame reads other frames of the input. Extraction at
frame t sums the input over the block of `output-period` frames holding t, reading only the
multiples of `input-period` that exist: [count, sum x (, sum x^2)]. Pooling at a multiple t of its
`input-period` sums the extraction outputs that exist at t-left-context .. t+right-context
(step input-period) and divides by the summed count. Their time rules are `input_frames`
(GetInputIndexes) and `computable_frames` (IsComputable: an output exists where at least one of
the inputs it reads exists); the math is in kaldi_avg/model/statistics_ops.py.
"""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import Component, Kind, field


def _floor(t: int, m: int) -> int:
    """The multiple of m at or below t (Kaldi's rounding down, also for negative t)."""
    return t // m * m


def _ceil(t: int, m: int) -> int:
    return -(-t // m) * m


class StatisticsExtractionComponent(Component):
    """Input x of input-dim D; output [count, sum x (, sum x^2 with include-variance)] of the
    input frames at multiples of input-period in each block of output-period frames, the same
    at every frame of the block."""
    type_name = "StatisticsExtractionComponent"
    SUMMARIZES_FRAMES = True
    FIELDS = (
        field("<InputDim>", Kind.I32, attr="in_dim"),
        field("<InputPeriod>", Kind.I32, 1),
        field("<OutputPeriod>", Kind.I32, 1),
        # Kaldi's token is misspelled; files have it so.
        field("<IncludeVarinance>", Kind.BOOL, True, attr="include_variance"),
    )

    def input_dim(self) -> int:
        return self.in_dim

    def output_dim(self) -> int:
        """count, sum x and, with include-variance, sum x^2."""
        return 1 + self.in_dim * (2 if self.include_variance else 1)

    def input_frames(self, lo: int, hi: int) -> tuple[int, int]:
        """From the start of lo's block to the last multiple of input-period in hi's block."""
        period = self.output_period
        return _floor(lo, period), _floor(hi, period) + period - self.input_period

    def computable_frames(self, lo: int, hi: int) -> tuple[int, int]:
        """Every frame of each block that holds a multiple of input-period within lo..hi."""
        first, last = _ceil(lo, self.input_period), _floor(hi, self.input_period)
        if first > last:
            return first, last
        period = self.output_period
        return _floor(first, period), _floor(last, period) + period - 1

    def check(self) -> None:
        self.require(self.in_dim > 0 and self.input_period > 0 and self.output_period > 0
                     and self.output_period % self.input_period == 0,
                     f"invalid configuration: input-dim={self.in_dim} input-period="
                     f"{self.input_period} output-period={self.output_period} (output-period must "
                     "be a multiple of input-period)")

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> StatisticsExtractionComponent:
        """input-dim required; input-period 1, output-period 1, include-variance true."""
        return cls(in_dim=cfg.get_int("input-dim"), input_period=cfg.get_int("input-period", 1),
                   output_period=cfg.get_int("output-period", 1),
                   include_variance=cfg.get_bool("include-variance", True))


class StatisticsPoolingComponent(Component):
    """Input [count, sums] from a StatisticsExtractionComponent whose output-period is this
    input-period. Output [log(count) x num-log-count-features, mean (, stddev)]: with
    output-stddevs the input's second half of sums is sum x^2 and the output's second half is
    sqrt(max(mean(x^2) - mean^2, variance-floor)).

    kaldi-avg computes it on every frame of a contiguous range; a frame that is not a multiple
    of input-period (where Kaldi's output does not exist) holds the value of the multiple below
    it, which is what the stats-layer's `Round(pooling, period)` reads."""
    type_name = "StatisticsPoolingComponent"
    SUMMARIZES_FRAMES = True
    FIELDS = (
        field("<InputDim>", Kind.I32, attr="in_dim"),
        field("<InputPeriod>", Kind.I32, 1),
        field("<LeftContext>", Kind.I32),
        field("<RightContext>", Kind.I32),
        field("<NumLogCountFeatures>", Kind.I32, 0),
        field("<OutputStddevs>", Kind.BOOL, False),
        field("<VarianceFloor>", Kind.F32, 1.0e-10),
    )

    def input_dim(self) -> int:
        return self.in_dim

    def output_dim(self) -> int:
        return self.in_dim + self.num_log_count_features - 1

    def input_frames(self, lo: int, hi: int) -> tuple[int, int]:
        period = self.input_period
        return _floor(lo, period) - self.left_context, _floor(hi, period) + self.right_context

    def computable_frames(self, lo: int, hi: int) -> tuple[int, int]:
        """The multiples t of input-period whose window t-left..t+right holds a multiple of it
        within lo..hi, as one span from the first to the last."""
        first, last = _ceil(lo, self.input_period), _floor(hi, self.input_period)
        if first > last:
            return first, last
        return first - self.right_context, last + self.left_context

    def check(self) -> None:
        ip, left, right = self.input_period, self.left_context, self.right_context
        self.require(self.in_dim > 0, f"input-dim must be > 0, got {self.in_dim}")
        self.require(ip > 0, f"input-period must be > 0, got {ip}")
        self.require(left >= 0 and right >= 0 and left + right > 0,
                     f"left-context={left} and right-context={right} must be >= 0, not both 0")
        self.require(left % ip == 0 and right % ip == 0,
                     f"left-context={left} and right-context={right} must be multiples of input-period={ip}")
        self.require(self.num_log_count_features >= 0,
                     f"num-log-count-features must be >= 0, got {self.num_log_count_features}")
        self.require(0.0 < self.variance_floor < 1.0,
                     f"variance-floor must be in (0, 1), got {self.variance_floor:g}")
        self.require(not self.output_stddevs or (self.in_dim - 1) % 2 == 0,
                     f"output-stddevs needs input-dim = 1 + 2 * feature-dim, got {self.in_dim}")

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> StatisticsPoolingComponent:
        """input-dim required; input-period 1, left-context and right-context -1 (so both must be
        set), num-log-count-features 0, output-stddevs false, variance-floor 1e-10."""
        return cls(in_dim=cfg.get_int("input-dim"), input_period=cfg.get_int("input-period", 1),
                   left_context=cfg.get_int("left-context", -1), right_context=cfg.get_int("right-context", -1),
                   num_log_count_features=cfg.get_int("num-log-count-features", 0),
                   output_stddevs=cfg.get_bool("output-stddevs", False),
                   variance_floor=cfg.get_float("variance-floor", 1.0e-10))
