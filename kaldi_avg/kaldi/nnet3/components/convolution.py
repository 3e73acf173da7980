"""The components of Kaldi's CNN layers (docs/kaldi-formats.md 4.23):

TimeHeightConvolutionComponent (src/nnet3/nnet-convolutional-component.cc `Write`, `Read`,
`InitFromConfig`, `GetInputIndexes`, `IsComputable`; its ConvolutionModel in
src/nnet3/convolution.cc `Write`, `Read`, `Check`) and SumBlockComponent
(src/nnet3/nnet-simple-component.cc), which `channel-average-layer` uses.

A convolution's input and output are images of `height` rows of `num-filters` values, the filter
index varying fastest (dim index = h * num_filters + f); the width axis is time. Output row h
(of `height-out`) at frame t is
    y(t)[h] = b + sum_i W_i x(t + time_offset_i)[h * height_subsample_out + height_offset_i]
over the model's (time, height) offsets i, W_i the i-th block of num-filters-in columns of the
num-filters-out x (num-filters-in * #offsets) matrix; heights outside 0..height-in-1 are zero,
and so are time offsets outside `required-time-offsets` where the frame does not exist.
"""
from __future__ import annotations

import math

import numpy as np

from ..config import ConfigLine
from ..descriptor import Descriptor, splice
from .base import (
    UPDATABLE_HEADER,
    Component,
    Field,
    Kind,
    UpdatableComponent,
    field,
    marker,
    matrix_stats,
    vector_stats,
)
from .initializers import gaussian, learning_rate_options, require


class TimeHeightConvolutionComponent(UpdatableComponent):
    type_name = "TimeHeightConvolutionComponent"
    FIELDS = UPDATABLE_HEADER + (
        marker("<Model>"),
        marker("<ConvolutionModel>", optional_on_read=True),
        field("<NumFiltersIn>", Kind.I32),
        field("<NumFiltersOut>", Kind.I32),
        field("<HeightIn>", Kind.I32),
        field("<HeightOut>", Kind.I32),
        field("<HeightSubsampleOut>", Kind.I32, 1),
        field("<Offsets>", Kind.INT_PAIR_VECTOR),        # (time, height), sorted and unique
        field("<RequiredTimeOffsets>", Kind.INT_VECTOR),
        marker("</ConvolutionModel>"),
        field("<LinearParams>", Kind.MATRIX),
        field("<BiasParams>", Kind.VECTOR),
        field("<MaxMemoryMb>", Kind.F32, 200.0),
        field("<UseNaturalGradient>", Kind.BOOL, True),
        field("<NumMinibatchesHistory>", Kind.F32, 4.0),
        Field("<AlphaInOut>", Kind.F32, ("alpha_in", "alpha_out"), (4.0, 4.0)),
        Field("<RankInOut>", Kind.I32, ("rank_in", "rank_out"),
              lambda v: (min(80, (v["linear_params"].shape[1] + 2) // 2),
                         min(80, (v["linear_params"].shape[0] + 1) // 2))),
    )
    PARAMS = ("linear_params", "bias_params")

    # -- the geometry --------------------------------------------------------------------
    @property
    def time_offsets(self) -> tuple[int, ...]:
        """The distinct time offsets, ascending: the frames one output frame reads."""
        return tuple(sorted({t for t, _ in self.offsets}))

    def input_dim(self) -> int:
        return self.num_filters_in * self.height_in

    def output_dim(self) -> int:
        return self.num_filters_out * self.height_out

    def input_descriptor(self, d: Descriptor) -> Descriptor:
        """The input at each time offset; an offset outside required-time-offsets reads zeros
        where its frame does not exist (Kaldi's IsComputable needs only the required ones)."""
        return splice(d, self.time_offsets, self.required_time_offsets)

    # -- checks ----------------------------------------------------------------------------
    def check(self) -> None:
        """ConvolutionModel::Check(check_heights_used=false, allow_height_padding=true) and the
        component's parameter shapes."""
        super().check()
        for attr in ("num_filters_in", "num_filters_out", "height_in", "height_out", "height_subsample_out"):
            self.require(getattr(self, attr) > 0, f"{attr.replace('_', '-')} must be > 0")
        offsets = list(self.offsets)
        self.require(offsets and offsets == sorted(set(offsets)),
                     f"offsets {offsets} must be non-empty, sorted and unique")
        required = set(self.required_time_offsets)
        self.require(required and required <= set(self.time_offsets),
                     f"required-time-offsets {sorted(required)} must be a non-empty subset of the time "
                     f"offsets {list(self.time_offsets)}")
        used = [False] * len(offsets)
        for h_out in range(0, self.height_out * self.height_subsample_out, self.height_subsample_out):
            available = False
            for i, (t, h) in enumerate(offsets):
                if 0 <= h_out + h < self.height_in:
                    used[i] = True
                    available |= t in required
            self.require(available, f"output height {h_out // self.height_subsample_out} reads no input "
                                    "when only the required time offsets exist")
        unused = [offsets[i] for i, u in enumerate(used) if not u]
        self.require(not unused, f"(time, height) offsets {unused} are never used")
        self.require(np.shape(self.linear_params) == (self.num_filters_out, self.num_filters_in * len(offsets)),
                     f"linear-params shape {np.shape(self.linear_params)} is not num-filters-out x "
                     f"(num-filters-in * {len(offsets)} offsets)")
        self.require(np.size(self.bias_params) == self.num_filters_out,
                     f"bias-params has {np.size(self.bias_params)} entries, expected {self.num_filters_out}")
        self.require(self.max_memory_mb > 0, "max-memory-mb must be > 0")
        self.require(self.num_minibatches_history > 1.0, "num-minibatches-history must be > 1")

    def info_items(self):
        offsets = " ".join(f"{t},{h}" for t, h in self.offsets)
        items = super().info_items() + [
            ("num-filters-in", self.num_filters_in), ("num-filters-out", self.num_filters_out),
            ("height-in", self.height_in), ("height-out", self.height_out),
            ("height-subsample-out", self.height_subsample_out), ("{time,height}-offsets", f"[{offsets}]"),
            ("required-time-offsets", "[" + ",".join(map(str, self.required_time_offsets)) + "]")]
        items += matrix_stats("filter-params", self.linear_params) + vector_stats("bias-params", self.bias_params)
        items += [("num-params", self.num_params()), ("max-memory-mb", self.max_memory_mb),
                  ("use-natural-gradient", self.use_natural_gradient)]
        if self.use_natural_gradient:
            items += [("num-minibatches-history", self.num_minibatches_history), ("rank-in", self.rank_in),
                      ("rank-out", self.rank_out), ("alpha", self.alpha_in)]
        return items

    # -- nnet3-init ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> TimeHeightConvolutionComponent:
        """InitFromConfig: num-filters-in/out and height-in/out required; the offsets from
        `offsets=t,h;t,h;...` (sorted) or the product of time-offsets x height-offsets;
        required-time-offsets default to all time offsets; W ~ N(0, param-stddev^2) with default
        1/sqrt(num-filters-in * #offsets), or the identity at offset (0,0) with init-unit=true;
        b ~ N(0, bias-stddev^2), default 0; rank-in/out default to min(80, (dim+1)/2) of the
        parameter matrix's columns plus one (the bias) and rows."""
        values = learning_rate_options(cfg)
        name = cls.type_name
        geometry = {k: cfg.get_int(k, -1) for k in ("num-filters-in", "num-filters-out", "height-in", "height-out")}
        require(cfg, name, all(v != -1 for v in geometry.values()),
                "expected all of num-filters-in, num-filters-out, height-in, height-out to be defined")
        f_in, f_out = geometry["num-filters-in"], geometry["num-filters-out"]
        offsets = _config_offsets(cfg, name)
        time_offsets = sorted({t for t, _ in offsets})
        required_text = cfg.get_str("required-time-offsets", "")
        required = _int_list(required_text) if required_text else time_offsets
        require(cfg, name, required is not None and required and required == sorted(set(required)),
                f"formatting problem in required-time-offsets={required_text}")
        param_stddev = cfg.get_float("param-stddev", -1.0)
        if param_stddev < 0.0:
            param_stddev = 1.0 / math.sqrt(f_in * len(offsets))
        if cfg.get_bool("init-unit", False):
            require(cfg, name, f_in == f_out and (0, 0) in offsets,
                    "init-unit needs num-filters-in == num-filters-out and the offset (0,0)")
            linear = np.zeros((f_out, f_in * len(offsets)), np.float32)
            i = offsets.index((0, 0))
            linear[:, i * f_in:(i + 1) * f_in] = np.eye(f_in, dtype=np.float32)
        else:
            linear = gaussian(rng, (f_out, f_in * len(offsets)), param_stddev)
        rank_in, rank_out = cfg.get_int("rank-in", -1), cfg.get_int("rank-out", -1)
        return cls(**values, num_filters_in=f_in, num_filters_out=f_out, height_in=geometry["height-in"],
                   height_out=geometry["height-out"],
                   height_subsample_out=cfg.get_int("height-subsample-out", 1),
                   offsets=offsets, required_time_offsets=required, linear_params=linear,
                   bias_params=gaussian(rng, f_out, cfg.get_float("bias-stddev", 0.0)),
                   max_memory_mb=cfg.get_float("max-memory-mb", 200.0),
                   use_natural_gradient=cfg.get_bool("use-natural-gradient", True),
                   num_minibatches_history=cfg.get_float("num-minibatches-history", 4.0),
                   alpha_in=cfg.get_float("alpha-in", 4.0), alpha_out=cfg.get_float("alpha-out", 4.0),
                   rank_in=rank_in if rank_in >= 0 else min(80, (f_in * len(offsets) + 2) // 2),
                   rank_out=rank_out if rank_out >= 0 else min(80, (f_out + 1) // 2))


def _int_list(text: str) -> list[int] | None:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        return None


def _config_offsets(cfg: ConfigLine, type_name: str) -> list[tuple[int, int]]:
    """`offsets=t,h;t,h;...`, else every (time, height) pair of time-offsets x height-offsets."""
    text = cfg.get_str("offsets", "")
    if text:
        pairs = [_int_list(p) for p in text.split(";")]
        require(cfg, type_name, all(p is not None and len(p) == 2 for p in pairs), f"bad config value offsets={text}")
        offsets = sorted(tuple(p) for p in pairs)
        require(cfg, type_name, len(set(offsets)) == len(offsets), f"repeated offset in offsets={text}")
        return offsets
    heights, times = cfg.get_str("height-offsets", ""), cfg.get_str("time-offsets", "")
    require(cfg, type_name, bool(heights and times),
            "expected either 'offsets', or both 'height-offsets' and 'time-offsets', to be defined")
    h, t = _int_list(heights), _int_list(times)
    require(cfg, type_name, h is not None and t is not None, "formatting problem in time-offsets or height-offsets")
    require(cfg, type_name, h == sorted(set(h)) and t == sorted(set(t)),
            "time-offsets and height-offsets must be nonempty, sorted and unique")
    return [(ti, hi) for ti in t for hi in h]


class SumBlockComponent(Component):
    """y = scale * (sum of the input's input-dim/output-dim consecutive blocks of output-dim
    columns); `channel-average-layer` averages a convolution's filters over its heights."""
    type_name = "SumBlockComponent"
    FIELDS = (
        field("<InputDim>", Kind.I32, attr="in_dim"),
        field("<OutputDim>", Kind.I32, attr="out_dim"),
        field("<Scale>", Kind.F32, 1.0),
    )

    def input_dim(self) -> int:
        return self.in_dim

    def output_dim(self) -> int:
        return self.out_dim

    def check(self) -> None:
        self.require(self.in_dim > 0 and self.out_dim > 0 and self.in_dim % self.out_dim == 0,
                     f"invalid input-dim={self.in_dim} output-dim={self.out_dim}")

    def info_items(self):
        return super().info_items() + [("scale", self.scale)]

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> SumBlockComponent:
        return cls(in_dim=cfg.get_int("input-dim"), out_dim=cfg.get_int("output-dim"),
                   scale=cfg.get_float("scale", 1.0))
