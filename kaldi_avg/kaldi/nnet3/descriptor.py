"""nnet3 Descriptors: parse, normalize and print in Kaldi's canonical form (docs/kaldi-formats.md 5.3).

The tree classes are shared by the file format (printing node lines byte-identically with
`nnet3-copy`), the context computation and the PyTorch graph executor.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .config import NetworkConfigError


class Descriptor:
    """Base class of descriptor tree nodes."""

    def children(self) -> tuple[Descriptor, ...]:
        return ()

    def node_names(self) -> list[str]:
        out: list[str] = []
        stack: list[Descriptor] = [self]
        while stack:
            d = stack.pop()
            if isinstance(d, NodeRef):
                out.append(d.name)
            stack.extend(reversed(d.children()))
        return out

    def __str__(self) -> str:
        return to_string(self)


@dataclass(frozen=True)
class NodeRef(Descriptor):
    name: str


@dataclass(frozen=True)
class Offset(Descriptor):
    arg: Descriptor
    t: int
    x: int = 0

    def children(self):
        return (self.arg,)


@dataclass(frozen=True)
class Append(Descriptor):
    args: tuple[Descriptor, ...]

    def children(self):
        return self.args


@dataclass(frozen=True)
class Sum(Descriptor):
    a: Descriptor
    b: Descriptor

    def children(self):
        return (self.a, self.b)


@dataclass(frozen=True)
class Failover(Descriptor):
    a: Descriptor
    b: Descriptor

    def children(self):
        return (self.a, self.b)


@dataclass(frozen=True)
class IfDefined(Descriptor):
    arg: Descriptor

    def children(self):
        return (self.arg,)


@dataclass(frozen=True)
class ReplaceIndex(Descriptor):
    arg: Descriptor
    var: str  # 't' or 'x'
    value: int

    def children(self):
        return (self.arg,)


@dataclass(frozen=True)
class Round(Descriptor):
    arg: Descriptor
    modulus: int

    def children(self):
        return (self.arg,)


@dataclass(frozen=True)
class Switch(Descriptor):
    args: tuple[Descriptor, ...]

    def children(self):
        return self.args


@dataclass(frozen=True)
class Scale(Descriptor):
    scale: float
    arg: Descriptor

    def children(self):
        return (self.arg,)


@dataclass(frozen=True)
class Const(Descriptor):
    value: float
    dim: int


# ---------------------------------------------------------------------------- parsing
_TOKEN = re.compile(r"\s*([(),]|[^\s(),]+)")


def _tokenize(text: str) -> list[str]:
    pos, out = 0, []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_descriptor(text: str) -> Descriptor:
    """Parses descriptor text (any Kaldi-accepted form) and returns its normalized tree."""
    toks = _tokenize(text)
    pos = 0

    def err(msg: str) -> NetworkConfigError:
        return NetworkConfigError(f"descriptor {text!r}: {msg}")

    def expect(tok: str) -> None:
        nonlocal pos
        if pos >= len(toks) or toks[pos] != tok:
            raise err(f"expected {tok!r} at {' '.join(toks[pos:pos + 3]) or 'end'}")
        pos += 1

    def number(kind=int):
        nonlocal pos
        if pos >= len(toks):
            raise err("expected a number")
        try:
            v = kind(toks[pos])
        except ValueError:
            raise err(f"expected a number, got {toks[pos]!r}") from None
        pos += 1
        return v

    def args_list() -> list[Descriptor]:
        nonlocal pos
        out = [desc()]
        while pos < len(toks) and toks[pos] == ",":
            pos += 1
            out.append(desc())
        return out

    def desc() -> Descriptor:
        nonlocal pos
        if pos >= len(toks):
            raise err("unexpected end")
        name = toks[pos]
        pos += 1
        if pos < len(toks) and toks[pos] == "(":
            pos += 1
            if name in ("Append", "Sum", "Switch"):
                items = args_list()
                expect(")")
                if name == "Append":
                    return Append(tuple(items))
                if name == "Switch":
                    return Switch(tuple(items))
                if len(items) < 2:
                    raise err("Sum needs at least two arguments")
                out = items[-1]
                for a in reversed(items[:-1]):
                    out = Sum(a, out)
                return out
            if name == "Failover":
                a = desc()
                expect(",")
                b = desc()
                expect(")")
                return Failover(a, b)
            if name == "IfDefined":
                a = desc()
                expect(")")
                return IfDefined(a)
            if name == "Offset":
                a = desc()
                expect(",")
                t = number()
                x = 0
                if toks[pos] == ",":
                    pos += 1
                    x = number()
                expect(")")
                return Offset(a, t, x)
            if name == "Round":
                a = desc()
                expect(",")
                m = number()
                expect(")")
                return Round(a, m)
            if name == "ReplaceIndex":
                a = desc()
                expect(",")
                var = toks[pos]
                pos += 1
                if var not in ("t", "x"):
                    raise err(f"ReplaceIndex variable must be t or x, got {var!r}")
                expect(",")
                v = number()
                expect(")")
                return ReplaceIndex(a, var, v)
            if name == "Scale":
                s = number(float)
                expect(",")
                a = desc()
                expect(")")
                return Scale(s, a)
            if name == "Const":
                v = number(float)
                expect(",")
                d = number()
                expect(")")
                return Const(v, d)
            raise err(f"unknown descriptor type {name!r}")
        if name in "(),":
            raise err(f"unexpected {name!r}")
        return NodeRef(name)

    d = desc()
    if pos != len(toks):
        raise err(f"trailing text {' '.join(toks[pos:])!r}")
    return normalize(d)


# ------------------------------------------------------------------------ normalizing
def _push(d: Descriptor, wrap) -> Descriptor:
    """Pushes a forwarding wrapper (Offset/Round/ReplaceIndex/Scale) down to the leaves."""
    if isinstance(d, Append):
        return Append(tuple(_push(a, wrap) for a in d.args))
    if isinstance(d, Sum):
        return Sum(_push(d.a, wrap), _push(d.b, wrap))
    if isinstance(d, Failover):
        return Failover(_push(d.a, wrap), _push(d.b, wrap))
    if isinstance(d, IfDefined):
        return IfDefined(_push(d.arg, wrap))
    return wrap(d)


def _offset(d: Descriptor, t: int, x: int) -> Descriptor:
    if isinstance(d, Const):
        return d
    if isinstance(d, Offset):
        return _offset(d.arg, d.t + t, d.x + x)
    if t == 0 and x == 0:
        return d
    return Offset(d, t, x)


def _scale(d: Descriptor, s: float) -> Descriptor:
    if isinstance(d, Const):
        return Const(d.value * s, d.dim)
    if isinstance(d, Offset):
        return Offset(_scale(d.arg, s), d.t, d.x)
    if isinstance(d, Round):
        return Round(_scale(d.arg, s), d.modulus)
    if isinstance(d, ReplaceIndex):
        return ReplaceIndex(_scale(d.arg, s), d.var, d.value)
    if isinstance(d, Switch):
        return Switch(tuple(_scale(a, s) for a in d.args))
    if isinstance(d, Scale):
        return _scale(d.arg, d.scale * s)
    if s == 1.0:
        return d
    return Scale(s, d)


def normalize(d: Descriptor) -> Descriptor:
    """Kaldi's `GeneralDescriptor::Normalize`: flatten Appends, merge Offsets, push
    forwarding operations inside Sum/Failover/IfDefined/Append, Scale inside Offset."""
    if isinstance(d, Append):
        parts: list[Descriptor] = []
        for a in d.args:
            a = normalize(a)
            parts.extend(a.args if isinstance(a, Append) else [a])
        return parts[0] if len(parts) == 1 else Append(tuple(parts))
    if isinstance(d, Sum):
        a, b = normalize(d.a), normalize(d.b)
        if isinstance(a, Sum):  # Sum(Sum(a1, a2), b) -> Sum(a1, Sum(a2, b))
            return normalize(Sum(a.a, Sum(a.b, b)))
        return Sum(a, b)
    if isinstance(d, Failover):
        return Failover(normalize(d.a), normalize(d.b))
    if isinstance(d, IfDefined):
        a = normalize(d.arg)
        if any(isinstance(x, Const) for x in _walk(a)):
            raise NetworkConfigError(f"IfDefined may not contain Const: {to_string(d)}")
        return IfDefined(a)
    if isinstance(d, Offset):
        return _push(normalize(d.arg), lambda leaf: _offset(leaf, d.t, d.x))
    if isinstance(d, Scale):
        return _push(normalize(d.arg), lambda leaf: _scale(leaf, d.scale))
    if isinstance(d, Round):
        return _push(normalize(d.arg), lambda leaf: Round(leaf, d.modulus))
    if isinstance(d, ReplaceIndex):
        return _push(normalize(d.arg), lambda leaf: ReplaceIndex(leaf, d.var, d.value))
    if isinstance(d, Switch):
        return Switch(tuple(normalize(a) for a in d.args))
    return d


def _walk(d: Descriptor):
    yield d
    for c in d.children():
        yield from _walk(c)


# ---------------------------------------------------------------------------- printing
def _num(v: float) -> str:
    return "%.7g" % v if float(v) != int(v) else "%d" % int(v)


def to_string(d: Descriptor) -> str:
    if isinstance(d, NodeRef):
        return d.name
    if isinstance(d, Offset):
        x = f", {d.x}" if d.x else ""
        return f"Offset({to_string(d.arg)}, {d.t}{x})"
    if isinstance(d, Append):
        return "Append(" + ", ".join(to_string(a) for a in d.args) + ")"
    if isinstance(d, Sum):
        return f"Sum({to_string(d.a)}, {to_string(d.b)})"
    if isinstance(d, Failover):
        return f"Failover({to_string(d.a)}, {to_string(d.b)})"
    if isinstance(d, IfDefined):
        return f"IfDefined({to_string(d.arg)})"
    if isinstance(d, ReplaceIndex):
        return f"ReplaceIndex({to_string(d.arg)}, {d.var}, {d.value})"
    if isinstance(d, Round):
        return f"Round({to_string(d.arg)}, {d.modulus})"
    if isinstance(d, Switch):
        return "Switch(" + ", ".join(to_string(a) for a in d.args) + ")"
    if isinstance(d, Scale):
        return f"Scale({_num(d.scale)}, {to_string(d.arg)})"
    if isinstance(d, Const):
        return f"Const({_num(d.value)}, {d.dim})"
    raise TypeError(f"not a descriptor: {d!r}")


# ------------------------------------------------------------------------- dimensions
def descriptor_dim(d: Descriptor, node_dim) -> int:
    """Output dim of `d`; `node_dim(name)` gives a node's dim. Checks Sum/Failover dims."""
    if isinstance(d, NodeRef):
        return node_dim(d.name)
    if isinstance(d, Append):
        return sum(descriptor_dim(a, node_dim) for a in d.args)
    if isinstance(d, (Sum, Failover)):
        a, b = descriptor_dim(d.a, node_dim), descriptor_dim(d.b, node_dim)
        if a != b:
            raise NetworkConfigError(f"{to_string(d)}: dims of the two arguments differ ({a} vs {b})")
        return a
    if isinstance(d, Switch):
        dims = {descriptor_dim(a, node_dim) for a in d.args}
        if len(dims) != 1:
            raise NetworkConfigError(f"{to_string(d)}: Switch arguments have different dims {sorted(dims)}")
        return dims.pop()
    if isinstance(d, Const):
        return d.dim
    return descriptor_dim(d.children()[0], node_dim)


def splice(d: Descriptor, offsets, required=None) -> Append:
    """What a component that reads other frames multiplies: `d` at each time offset, in order
    (TdnnComponent, TimeHeightConvolution, RestrictedAttention). Offsets not in `required`
    (default: all are) are optional, read under IfDefined: zeros where the frame does not exist,
    as Kaldi pads them; only the required ones make the node (un)computable."""
    parts = []
    for t in offsets:
        shifted = Offset(d, t) if t != 0 else d
        parts.append(shifted if required is None or t in required else IfDefined(shifted))
    return Append(tuple(parts))


def descriptor_modulus(d: Descriptor) -> int:
    """Kaldi's `Descriptor::Modulus`: the network computes the same at t and at t + modulus
    (1 unless Round or Switch is used)."""
    if isinstance(d, Round):
        return d.modulus
    if isinstance(d, ReplaceIndex):
        return 1
    out = len(d.args) if isinstance(d, Switch) else 1
    for c in d.children():
        out = math.lcm(out, descriptor_modulus(c))
    return out
