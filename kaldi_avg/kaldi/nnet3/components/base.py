"""The component machinery: a declarative field table per type, turned into Kaldi's bytes.

Every component class lists its fields in Kaldi's on-disk order (`FIELDS`); the generic reader
and writer below turn that table into exactly what Kaldi's `Read`/`Write` produce and accept
(docs/kaldi-formats.md section 4), so each type's token order is written down once. A field is
either always written, written only when Kaldi would (pitfall 6), or legacy: accepted on read
for old models and never written.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

import numpy as np

from ...binary import KaldiFormatError, KaldiReader, KaldiWriter
from ..config import ConfigLine, NetworkConfigError
from ..descriptor import Descriptor


class ComponentError(ValueError):
    """A component's contents are inconsistent; the message starts with the component type."""


class Kind(Enum):
    I32 = "int32"
    F32 = "float"
    F64 = "double"
    BOOL = "bool"
    VECTOR = "float vector"
    MATRIX = "float matrix"
    DOUBLE_VECTOR = "double vector"  # Vector<double> (RestrictedAttentionComponent's statistics)
    DOUBLE_MATRIX = "double matrix"  # CuMatrix<double>
    INT_VECTOR = "int32 vector"  # WriteIntegerVector (e.g. TdnnComponent's <TimeOffsets>)
    INT_PAIR_VECTOR = "int32 pair vector"  # WriteIntegerPairVector (convolution offsets)
    FLAG = "bare token"        # presence of the token is the value (e.g. <Continuous>); with no
                               # attribute, a token that only marks structure (<Model>)


REQUIRED = object()            # no default: the value must be given / must be in the file

# The array kinds: (number of dimensions, element type held in memory).
ARRAY_KINDS = {Kind.VECTOR: (1, np.float32), Kind.MATRIX: (2, np.float32),
               Kind.DOUBLE_VECTOR: (1, np.float64), Kind.DOUBLE_MATRIX: (2, np.float64)}


@dataclass(frozen=True)
class Field:
    token: str
    kind: Kind
    attrs: tuple[str, ...]                 # attributes receiving the values; () = read and dropped
    # The value for new components and for optional fields absent on read; a callable is given
    # the values resolved so far (e.g. <BlockDim> defaults to <Dim>).
    default: Any = REQUIRED
    optional: bool = False                 # may be absent when reading
    written: Callable[[Any], bool] | None = None   # None: always written
    aliases: tuple[str, ...] = ()          # other tokens Kaldi accepts in its place
    legacy: bool = False                   # read for back-compatibility only, never written


def _snake(token: str) -> str:
    """`<LinearParams>` -> `linear_params`, `<L2Regularize>` -> `l2_regularize`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", token.strip("<>")).lower()


def field(token: str, kind: Kind, default: Any = REQUIRED, attr: str | None = None,
          aliases: tuple[str, ...] = ()) -> Field:
    """A field that is always written and must be present when reading."""
    return Field(token, kind, (attr or _snake(token),), default, aliases=aliases)


def optional(token: str, kind: Kind, default: Any, when: Callable[[Any], bool] | None = None,
             attr: str | None = None) -> Field:
    """A field that may be absent on read; written always, or only `when` it holds."""
    return Field(token, kind, (attr or _snake(token),), default, optional=True, written=when)


def marker(token: str, optional_on_read: bool = False) -> Field:
    """A bare token that only marks structure (e.g. `<Model>` before a nested object); always
    written; `optional_on_read` where Kaldi's reader also accepts it missing."""
    return Field(token, Kind.FLAG, (), None, optional=optional_on_read)


def legacy(token: str, kind: Kind, attr: str | None = None) -> Field:
    """A field old Kaldi versions wrote; read (into `attr`, or dropped) and never written."""
    return Field(token, kind, (attr,) if attr else (), optional=True, legacy=True)


def _read_value(r: KaldiReader, kind: Kind) -> Any:
    if kind is Kind.I32:
        return r.read_int32()
    if kind is Kind.F32:
        return float(np.float32(r.read_float()))
    if kind is Kind.F64:
        return r.read_double()
    if kind is Kind.BOOL:
        return r.read_bool()
    if kind is Kind.VECTOR:
        return r.read_vector()
    if kind is Kind.MATRIX:
        return r.read_matrix()
    if kind is Kind.DOUBLE_VECTOR:
        return r.read_double_vector()
    if kind is Kind.DOUBLE_MATRIX:
        return r.read_matrix(double=True)
    if kind is Kind.INT_VECTOR:
        return r.read_int_vector()
    if kind is Kind.INT_PAIR_VECTOR:
        return r.read_int_pair_vector()
    raise AssertionError(kind)


def _write_value(w: KaldiWriter, kind: Kind, v: Any) -> None:
    if kind is Kind.I32:
        w.int32(v)
    elif kind is Kind.F32:
        w.float32(v)
    elif kind is Kind.F64:
        w.float64(v)
    elif kind is Kind.BOOL:
        w.bool(v)
    elif kind is Kind.VECTOR:
        w.vector(v)
    elif kind is Kind.MATRIX:
        w.matrix(v)
    elif kind in (Kind.DOUBLE_VECTOR, Kind.DOUBLE_MATRIX):
        (w.vector if kind is Kind.DOUBLE_VECTOR else w.matrix)(v, double=True)
    elif kind is Kind.INT_VECTOR:
        w.int_vector(v)
    elif kind is Kind.INT_PAIR_VECTOR:
        w.int_pair_vector(v)


def _coerce(kind: Kind, v: Any) -> Any:
    """The stored form: Python scalars (floats rounded to float32 where Kaldi keeps floats) and
    writable, contiguous float32 (float64 for the double kinds) arrays."""
    if kind is Kind.I32:
        return int(v)
    if kind is Kind.F32:
        return float(np.float32(v))
    if kind is Kind.F64:
        return float(v)
    if kind in (Kind.BOOL, Kind.FLAG):
        return bool(v)
    if kind is Kind.INT_VECTOR:
        return tuple(int(x) for x in v)
    if kind is Kind.INT_PAIR_VECTOR:
        return tuple((int(a), int(b)) for a, b in v)
    want, dtype = ARRAY_KINDS[kind]
    arr = np.require(np.asarray(v, dtype=dtype), requirements=("C", "W"))
    if arr.ndim != want:
        raise ValueError(f"expected a {want}-D array, got shape {arr.shape}")
    return arr


def _same_token(got: str, tokens: tuple[str, ...]) -> bool:
    # Kaldi's ExpectToken also accepts "<X>" written without its "<".
    return any(got == t or (t.startswith("<") and got == t[1:]) for t in tokens)


_REGISTRY: dict[str, type[Component]] = {}


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "%g" % v
    return str(v)


def matrix_stats(name: str, m: np.ndarray) -> list[tuple[str, Any]]:
    """`nnet3-info`-style summary of a parameter matrix."""
    m = np.asarray(m, dtype=np.float64)
    return [(f"{name}-rms", float(np.sqrt(np.mean(m * m))) if m.size else 0.0)]


def vector_stats(name: str, v: np.ndarray) -> list[tuple[str, Any]]:
    """`nnet3-info`-style summary of a parameter vector: `name-{mean,stddev}=m,s`."""
    v = np.asarray(v, dtype=np.float64)
    mean, std = (float(v.mean()), float(v.std())) if v.size else (0.0, 0.0)
    return [(f"{name}-{{mean,stddev}}", f"{mean:g},{std:g}")]


def _succinct(f: float) -> str:
    """How Kaldi prints one entry of a summarized vector (nnet-parse.cc PrintFloatSuccinctly)."""
    a = abs(f)
    if 10.0 <= a < 10000.0:
        return "%.0f" % f
    if a >= 0.995:
        return "%.1f" % f
    if a >= 0.01:
        return "%.2f" % f
    return "%.1g" % f


SUMMARY_PERCENTILES = (0, 1, 2, 5, 10, 20, 50, 80, 90, 95, 98, 99, 100)


def summary_mean(v) -> float | None:
    """The mean Kaldi's SummarizeVector prints for `v` (float32 arithmetic), or None for vectors of
    fewer than 10 entries, which it prints element by element without a mean."""
    v = np.asarray(v, np.float32).reshape(-1)
    if v.size < 10:
        return None
    return float(np.float32(np.float32(v.astype(np.float64).sum()) / np.float32(v.size)))


def summarize_vector(v) -> str:
    """Kaldi's SummarizeVector, used for statistics in `nnet3-info` lines: `[ a b ... ]` below 10
    entries, else `[percentiles(0,1,2,5 10,20,50,80,90 95,98,99,100)=(...), mean=m, stddev=s]`
    (mean and stddev to 3 significant digits)."""
    v = np.asarray(v, np.float32).reshape(-1)
    if v.size < 10:
        return "[ " + "".join(_succinct(float(x)) + " " for x in v) + "]"
    mean = np.float32(summary_mean(v))
    sq = np.float32(np.dot(v.astype(np.float64), v.astype(np.float64)))
    stddev = np.sqrt(max(np.float32(sq / np.float32(v.size)) - mean * mean, np.float32(0.0)))
    ordered = np.sort(v)
    n = v.size - 1
    parts = []
    for i, p in enumerate(SUMMARY_PERCENTILES):
        parts.append(_succinct(float(ordered[(n * p) // 100])))
        if i + 1 < len(SUMMARY_PERCENTILES):
            parts.append(" " if i in (3, 8) else ",")
    return ("[percentiles(0,1,2,5 10,20,50,80,90 95,98,99,100)=(" + "".join(parts)
            + "), mean=%.3g, stddev=%.3g]" % (float(mean), float(stddev)))


class Component(ABC):
    """Base of all nnet3 components. Subclasses declare `type_name`, `FIELDS` (Kaldi's order) and
    the dimension/consistency logic; reading, writing and construction are generic."""

    type_name: ClassVar[str]
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    END_ALIASES: ClassVar[tuple[str, ...]] = ()   # closing tokens Kaldi also accepts
    PARAMS: ClassVar[tuple[str, ...]] = ()        # attributes holding trainable arrays
    # False where Kaldi's GetInputIndexes asks for nothing: the node's input descriptor is never
    # evaluated (DropoutMaskComponent, whose node names itself as input).
    READS_INPUT: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "type_name" in cls.__dict__:
            if cls.type_name in _REGISTRY:
                raise TypeError(f"component type {cls.type_name} registered twice")
            _REGISTRY[cls.type_name] = cls

    def __init__(self, **values: Any):
        resolved: dict[str, Any] = {}
        for fld in self.FIELDS:
            if fld.legacy:
                continue
            missing = [a for a in fld.attrs if a not in resolved and a not in values]
            default = None
            if missing:
                if fld.default is REQUIRED:
                    raise TypeError(f"{self.type_name}: missing value for {missing[0]}")
                default = fld.default(resolved) if callable(fld.default) else fld.default
            for i, attr in enumerate(fld.attrs):
                if attr in resolved:     # an attribute shared by two fields (e.g. <IsGradient>)
                    continue
                v = values.pop(attr) if attr in values else (
                    default[i] if len(fld.attrs) > 1 else default)
                try:
                    resolved[attr] = _coerce(fld.kind, v)
                except (TypeError, ValueError) as e:
                    raise ComponentError(f"{self.type_name}: {attr}: {e}") from None
                setattr(self, attr, resolved[attr])
        if values:
            raise TypeError(f"{self.type_name}: unknown field(s) {', '.join(values)}")

    # -- dimensions and parameters (overridden per type) -------------------------------------
    @abstractmethod
    def input_dim(self) -> int: ...

    @abstractmethod
    def output_dim(self) -> int: ...

    def input_descriptor(self, d: Descriptor) -> Descriptor:
        """The input the component's math sees when its node's input is `d`: `d` itself, except
        for components that read other frames too (TdnnComponent splices over time offsets)."""
        return d

    # Kaldi's GetInputIndexes/IsComputable for components that summarize other frames of their
    # input (the statistics components, SUMMARIZES_FRAMES); everything else maps frame t to
    # input frame t. Both take and return inclusive, non-empty, finite frame ranges.
    SUMMARIZES_FRAMES: ClassVar[bool] = False

    def input_frames(self, lo: int, hi: int) -> tuple[int, int]:
        """The span of input frames that outputs lo..hi read."""
        return lo, hi

    def computable_frames(self, lo: int, hi: int) -> tuple[int, int]:
        """The output frames that are computable when the input exists exactly on lo..hi
        (empty when lo > hi)."""
        return lo, hi

    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays, the component's own storage (writing into them updates it)."""
        return {a: getattr(self, a) for a in self.PARAMS}

    def num_params(self) -> int:
        return sum(int(np.asarray(p).size) for p in self.params().values())

    # -- serialization -----------------------------------------------------------------
    @classmethod
    def read_body(cls, r: KaldiReader) -> Component:
        """Reads the body; `r` is positioned just after the `<TypeName> ` token."""
        start = r.pos
        try:
            values = cls._read_fields(r)
        except KaldiFormatError as e:
            raise KaldiFormatError(f"{cls.type_name} (body starting at byte {start}): {e}") from None
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            raise KaldiFormatError(f"{r.source}: {cls.type_name} (body starting at byte {start}): "
                                   f"{e}") from None

    @classmethod
    def _read_fields(cls, r: KaldiReader) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for fld in cls.FIELDS:
            tokens = (fld.token,) + fld.aliases
            if fld.optional:
                if r.eof() or not _same_token(r.peek_token(), tokens):
                    if not fld.legacy:
                        d = fld.default(values) if callable(fld.default) else fld.default
                        values.update(zip(fld.attrs, d if len(fld.attrs) > 1 else (d,)))
                    continue
                r.read_token()
            else:
                at = r.pos
                got = r.read_token()
                if not _same_token(got, tokens):
                    r.pos = at
                    raise r.error(f"expected token {fld.token}, got {got!r}")
            if fld.kind is Kind.FLAG:
                values.update((a, True) for a in fld.attrs)
                continue
            read = [_read_value(r, fld.kind) for _ in range(max(1, len(fld.attrs)))]
            values.update(zip(fld.attrs, read))
        at = r.pos
        end = r.read_token()
        if not _same_token(end, (f"</{cls.type_name}>",) + cls.END_ALIASES):
            r.pos = at
            raise r.error(f"expected token </{cls.type_name}>, got {end!r}")
        return values

    def write(self, w: KaldiWriter) -> None:
        """Writes `<TypeName> ` ... `</TypeName> ` exactly as Kaldi's `Write` does."""
        w.token(f"<{self.type_name}>")
        for fld in self.FIELDS:
            if fld.legacy or (fld.written is not None and not fld.written(self)):
                continue
            w.token(fld.token)
            for attr in fld.attrs if fld.kind is not Kind.FLAG else ():
                v = getattr(self, attr)
                if fld.kind in ARRAY_KINDS:
                    want = ARRAY_KINDS[fld.kind][0]
                    if np.ndim(v) != want:
                        raise self.error(f"{attr} must be {want}-D, got shape {np.shape(v)}")
                _write_value(w, fld.kind, v)
        w.token(f"</{self.type_name}>")

    # -- initialization from a config line (nnet3-init) --------------------------------
    @classmethod
    @abstractmethod
    def from_config(cls, cfg: ConfigLine, rng: np.random.Generator) -> Component: ...

    # -- checks and diagnostics ----------------------------------------------------------
    def error(self, msg: str) -> ComponentError:
        return ComponentError(f"{self.type_name}: {msg}")

    def require(self, condition: bool, msg: str) -> None:
        if not condition:
            raise self.error(msg)

    def validate(self) -> None:
        """Checks Kaldi leaves to compute time (pitfall 10): shapes, ranges, finite values."""
        for fld in self.FIELDS:
            if fld.legacy or (fld.kind not in (Kind.F32, Kind.F64) and fld.kind not in ARRAY_KINDS):
                continue
            for attr in fld.attrs:
                v = np.asarray(getattr(self, attr))
                if fld.kind in ARRAY_KINDS:
                    ndim = ARRAY_KINDS[fld.kind][0]
                    self.require(v.ndim == ndim, f"{attr} must be a {('vector', 'matrix')[ndim - 1]}, "
                                                 f"got shape {v.shape}")
                self.require(bool(np.all(np.isfinite(v))), f"{attr} contains NaN or infinite values")
        self.check()

    def check(self) -> None:
        """Type-specific consistency checks (called by `validate`)."""

    def info_items(self) -> list[tuple[str, Any]]:
        return [("input-dim", self.input_dim()), ("output-dim", self.output_dim())]

    def info(self) -> str:
        """One line like `nnet3-info`: `type=..., input-dim=..., output-dim=..., ...`."""
        items = [("type", self.type_name)] + self.info_items()
        return ", ".join(f"{k}={_fmt(v)}" for k, v in items)

    def __repr__(self) -> str:
        parts = []
        for fld in self.FIELDS:
            for attr in () if fld.legacy else fld.attrs:
                v = getattr(self, attr)
                parts.append(f"{attr}=<{'x'.join(map(str, v.shape))}>" if isinstance(v, np.ndarray)
                             else f"{attr}={v!r}")
        return f"{self.type_name}({', '.join(dict.fromkeys(parts))})"


class SameDimComponent(Component):
    """A component whose input and output dims are both its <Dim> (`dim`)."""

    def input_dim(self) -> int:
        return self.dim

    def output_dim(self) -> int:
        return self.dim

    def check(self) -> None:
        self.require(self.dim > 0, f"dim must be > 0, got {self.dim}")


UPDATABLE_HEADER = (
    optional("<LearningRateFactor>", Kind.F32, 1.0, when=lambda c: c.learning_rate_factor != 1.0),
    optional("<IsGradient>", Kind.BOOL, False, when=lambda c: c.is_gradient),
    optional("<MaxChange>", Kind.F32, 0.0, when=lambda c: c.max_change > 0.0),
    optional("<L2Regularize>", Kind.F32, 0.0, when=lambda c: c.l2_regularize > 0.0),
    field("<LearningRate>", Kind.F32, 0.001),
)


class UpdatableComponent(Component):
    """Components with trainable parameters; `FIELDS` start with `UPDATABLE_HEADER` (section 4.1)."""

    def check(self) -> None:
        for attr in ("learning_rate", "learning_rate_factor", "max_change", "l2_regularize"):
            self.require(getattr(self, attr) >= 0.0, f"{attr} must be >= 0, got {getattr(self, attr)}")

    def info_items(self) -> list[tuple[str, Any]]:
        items = super().info_items() + [("learning-rate", self.learning_rate)]
        if self.is_gradient:
            items.append(("is-gradient", True))
        if self.l2_regularize != 0.0:
            items.append(("l2-regularize", self.l2_regularize))
        if self.learning_rate_factor != 1.0:
            items.append(("learning-rate-factor", self.learning_rate_factor))
        if self.max_change > 0.0:
            items.append(("max-change", self.max_change))
        return items


def component_types() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def read_component(r: KaldiReader) -> Component:
    """Reads `<TypeName> ` and the body that follows (Kaldi's `Component::ReadNew`)."""
    at = r.pos
    token = r.read_token()
    cls = _REGISTRY.get(token[1:-1]) if token.startswith("<") and token.endswith(">") else None
    if cls is None:
        r.pos = at
        raise r.error(f"unknown component type {token!r}")
    return cls.read_body(r)


def component_from_config(cfg: ConfigLine, rng: np.random.Generator) -> Component:
    """`component name=... type=... <options>` as nnet3-init reads it; `name=` is the caller's."""
    if cfg.first != "component":
        raise NetworkConfigError(f"{cfg.where}: expected a 'component' line, got {cfg.first!r}: {cfg.text}")
    type_name = cfg.get_str("type")
    cls = _REGISTRY.get(type_name)
    if cls is None:
        raise NetworkConfigError(f"{cfg.where}: unknown component type {type_name!r} in: {cfg.text}")
    comp = cls.from_config(cfg, rng)
    unused = [k for k in cfg.unused() if k != "name"]
    if unused:
        raise NetworkConfigError(f"{cfg.where}: {type_name} does not accept option(s) "
                          f"{', '.join(unused)} in: {cfg.text}")
    try:
        comp.validate()
    except ComponentError as e:
        raise NetworkConfigError(f"{cfg.where}: invalid initializer: {e} in: {cfg.text}") from None
    return comp
