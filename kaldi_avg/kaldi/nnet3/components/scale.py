"""Per-element scales and offsets, fixed and trainable (docs/kaldi-formats.md 4.12, 4.13, 4.16)."""
from __future__ import annotations

import numpy as np

from ..config import ConfigLine
from .base import UPDATABLE_HEADER, Component, Kind, UpdatableComponent, field, legacy, vector_stats
from .initializers import gaussian, learning_rate_options, read_vector_file, require


def _vector_dim(comp: Component, attr: str) -> int:
    return int(np.size(getattr(comp, attr)))


class FixedScaleComponent(Component):
    """y = x * scales (element-wise); not updatable."""
    type_name = "FixedScaleComponent"
    FIELDS = (field("<Scales>", Kind.VECTOR),)

    def input_dim(self) -> int:
        return _vector_dim(self, "scales")

    output_dim = input_dim

    def check(self) -> None:
        self.require(self.input_dim() > 0, "scales is empty")

    def info_items(self):
        return super().info_items() + vector_stats("scales", self.scales)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> FixedScaleComponent:
        """`scales=<vector file>`, or dim= with a constant scale= (else N(0, 1), for testing)."""
        if cfg.has("scales"):
            return cls(scales=read_vector_file(cfg, cls.type_name, "scales"))
        dim = cfg.get_int("dim")
        require(cfg, cls.type_name, dim > 0, "dim must be > 0")
        if cfg.has("scale"):
            return cls(scales=np.full(dim, cfg.get_float("scale"), np.float32))
        return cls(scales=gaussian(rng, dim, 1.0))


class FixedBiasComponent(Component):
    """y = x + bias; not updatable."""
    type_name = "FixedBiasComponent"
    FIELDS = (field("<Bias>", Kind.VECTOR),)

    def input_dim(self) -> int:
        return _vector_dim(self, "bias")

    output_dim = input_dim

    def check(self) -> None:
        self.require(self.input_dim() > 0, "bias is empty")

    def info_items(self):
        return super().info_items() + vector_stats("bias", self.bias)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> FixedBiasComponent:
        """`bias=<vector file>`, or dim= with N(0, 1) values (for testing)."""
        if cfg.has("bias"):
            return cls(bias=read_vector_file(cfg, cls.type_name, "bias"))
        dim = cfg.get_int("dim")
        require(cfg, cls.type_name, dim > 0, "dim must be > 0")
        return cls(bias=gaussian(rng, dim, 1.0))


class PerElementScaleComponent(UpdatableComponent):
    """y = x * scales (element-wise; Kaldi's <Params>), trained by plain SGD."""
    type_name = "PerElementScaleComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<Params>", Kind.VECTOR, attr="scales"),
        legacy("<IsGradient>", Kind.BOOL, attr="is_gradient"),
    )
    PARAMS = ("scales",)
    VECTOR_KEY = "vector"          # the config option naming a vector file

    def input_dim(self) -> int:
        return _vector_dim(self, "scales")

    output_dim = input_dim

    def check(self) -> None:
        super().check()
        self.require(self.input_dim() > 0, "scales (<Params>) is empty")

    def info_items(self):
        p = np.asarray(self.scales)
        items = super().info_items()
        if p.size:
            items += [("scales-min", float(p.min())), ("scales-max", float(p.max()))]
        return items + vector_stats("scales", p)

    @classmethod
    def _scales_from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> np.ndarray:
        """A vector file, or dim= with N(param-mean, param-stddev^2) values (defaults 1, 0)."""
        if cfg.has(cls.VECTOR_KEY):
            scales = read_vector_file(cfg, cls.type_name, cls.VECTOR_KEY)
            if cfg.has("dim"):
                require(cfg, cls.type_name, cfg.get_int("dim") == scales.size,
                        f"dim does not match the {cls.VECTOR_KEY}= file ({scales.size})")
            return scales
        param_mean = cfg.get_float("param-mean", 1.0)
        param_stddev = cfg.get_float("param-stddev", 0.0)
        dim = cfg.get_int("dim")
        require(cfg, cls.type_name, dim > 0 and param_stddev >= 0,
                "dim must be > 0 and param-stddev >= 0")
        return gaussian(rng, dim, param_stddev, param_mean)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> PerElementScaleComponent:
        return cls(**learning_rate_options(cfg), scales=cls._scales_from_config(cfg, rng))


class NaturalGradientPerElementScaleComponent(PerElementScaleComponent):
    """lstmp-layer's peepholes (w_i.c, w_f.c, w_o.c)."""
    type_name = "NaturalGradientPerElementScaleComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<Params>", Kind.VECTOR, attr="scales"),
        field("<IsGradient>", Kind.BOOL, False),     # written here as well as in the header
        field("<Rank>", Kind.I32, 8),
        field("<UpdatePeriod>", Kind.I32, 10),
        field("<NumSamplesHistory>", Kind.F32, 2000.0),
        field("<Alpha>", Kind.F32, 4.0),
        legacy("<MaxChangePerMinibatch>", Kind.F32),
    )
    VECTOR_KEY = "scales"

    def check(self) -> None:
        super().check()
        self.require(self.rank > 0 and self.update_period > 0, "rank and update-period must be > 0")
        self.require(self.num_samples_history > 0 and self.alpha >= 0,
                     "num-samples-history must be > 0 and alpha >= 0")

    def info_items(self):
        return super().info_items() + [
            ("rank", self.rank), ("update-period", self.update_period),
            ("num-samples-history", self.num_samples_history), ("alpha", self.alpha)]

    @classmethod
    def from_config(cls, cfg: ConfigLine,
                    rng: np.random.Generator) -> NaturalGradientPerElementScaleComponent:
        return cls(rank=cfg.get_int("rank", 8), update_period=cfg.get_int("update-period", 10),
                   num_samples_history=cfg.get_float("num-samples-history", 2000.0),
                   alpha=cfg.get_float("alpha", 4.0), **learning_rate_options(cfg),
                   scales=cls._scales_from_config(cfg, rng))


class ScaleAndOffsetComponent(UpdatableComponent):
    """Per block of len(scales) columns: y = x * scales + offsets (scales with |s| < 1e-4 are
    replaced by +-1e-4 when computing)."""
    type_name = "ScaleAndOffsetComponent"
    FIELDS = UPDATABLE_HEADER + (
        field("<Dim>", Kind.I32),
        field("<Scales>", Kind.VECTOR, lambda v: np.ones(v["dim"], np.float32)),
        field("<Offsets>", Kind.VECTOR, lambda v: np.zeros(np.size(v["scales"]), np.float32)),
        field("<UseNaturalGradient>", Kind.BOOL, True),
        field("<Rank>", Kind.I32, 20),
    )
    PARAMS = ("scales", "offsets")

    def input_dim(self) -> int:
        return self.dim

    output_dim = input_dim

    def check(self) -> None:
        super().check()
        block = np.size(self.scales)
        self.require(block > 0 and np.size(self.offsets) == block,
                     f"scales ({block}) and offsets ({np.size(self.offsets)}) must be non-empty "
                     "and of equal length")
        self.require(self.dim > 0 and self.dim % block == 0,
                     f"dim {self.dim} must be a positive multiple of the block size {block}")
        self.require(self.rank > 0, f"rank must be > 0, got {self.rank}")

    def info_items(self):
        items = super().info_items() + [("rank", self.rank)]
        if self.dim != np.size(self.scales):
            items.append(("block-size", int(np.size(self.scales))))
        return items + vector_stats("scales", self.scales) + vector_stats("offsets", self.offsets)

    @classmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> ScaleAndOffsetComponent:
        """Scales start at 1, offsets at 0."""
        values = learning_rate_options(cfg)
        dim = cfg.get_int("dim")
        block_dim = cfg.get_int("block-dim", dim)
        require(cfg, cls.type_name, dim > 0 and block_dim > 0 and dim % block_dim == 0,
                "dim must be > 0 and block-dim must divide it")
        return cls(**values, dim=dim, scales=np.ones(block_dim, np.float32),
                   use_natural_gradient=cfg.get_bool("use-natural-gradient", True),
                   rank=cfg.get_int("rank", 20))
