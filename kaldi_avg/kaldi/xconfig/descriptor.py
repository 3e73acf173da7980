"""Descriptors as xconfig files write them (docs/kaldi-formats.md 5.4).

xconfig extends the nnet3 grammar (`nnet3/descriptor.py`) with `[-k]` (the k-th previous
layer), `name@k` (= Offset(name, k)), a bare integer k (= Offset(previous layer, k); 0 = the
layer itself) and `layer.aux` (an auxiliary output). The tree is kept as written, without
nnet3's normalization, because Kaldi's generator prints it that way into the configs;
`nnet3-init` normalizes when it reads them.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..nnet3.config import is_valid_name
from .syntax import XconfigError

_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_TOKEN = re.compile(r"[(),@]|[^\s(),@]+")
_END = "end of descriptor"


@dataclass(frozen=True)
class XconfigDescriptor:
    """`op` is None for a layer reference (`args == (name,)`), else an operator whose
    `args` are sub-descriptors and plain numbers/letters, in the order they are written."""
    op: str | None
    args: tuple

    def text(self, node_name: Callable[[str], str] = lambda name: name) -> str:
        """Prints with `node_name` mapping each layer reference (e.g. lstm1 -> lstm1.rp)."""
        if self.op is None:
            return node_name(self.args[0])
        parts = [a.text(node_name) if isinstance(a, XconfigDescriptor) else str(a)
                 for a in self.args]
        return f"{self.op}({', '.join(parts)})"

    def dim(self, layer_dim: Callable[[str], int]) -> int:
        if self.op is None:
            return layer_dim(self.args[0])
        if self.op == "Append":
            return sum(a.dim(layer_dim) for a in self.args)
        if self.op == "Const":
            return self.args[1]
        if self.op == "Scale":
            return self.args[1].dim(layer_dim)
        if self.op in ("Offset", "Round", "ReplaceIndex"):
            return self.args[0].dim(layer_dim)
        dims = [a.dim(layer_dim) for a in self.args]  # Sum, Failover, IfDefined, Switch
        if len(set(dims)) != 1:
            raise XconfigError(f"the arguments of {self.text()} have different dims {dims}")
        return dims[0]


def parse_xconfig_descriptor(text: str, previous_layers: list[str]) -> XconfigDescriptor:
    """Parses `text`; `previous_layers` are the names of the layers above, in file order."""
    tokens = _TOKEN.findall(_expand_brackets(text, previous_layers)) + [_END]
    parser = _Parser(tokens, previous_layers, text)
    d = parser.descriptor()
    if parser.peek() != _END:
        parser.fail(f"unexpected {' '.join(tokens[parser.pos:-1])!r} after the descriptor")
    return d


def _expand_brackets(text: str, previous_layers: list[str]) -> str:
    def previous(m: re.Match) -> str:
        k = m.group(1).strip()
        if not (_is_int(k) and -len(previous_layers) <= int(k) < 0):
            raise XconfigError(f"descriptor {text!r}: [{k}] must be a negative offset "
                               f"within the {len(previous_layers)} layer(s) above")
        return previous_layers[int(k)]

    expanded = _BRACKET.sub(previous, text)
    if "[" in expanded or "]" in expanded:
        raise XconfigError(f"descriptor {text!r}: unmatched '[' or ']'")
    return expanded


class _Parser:
    def __init__(self, tokens: list[str], previous_layers: list[str], text: str):
        self.tokens = tokens
        self.pos = 0
        self.previous_layers = previous_layers
        self.text = text

    def fail(self, msg: str):
        raise XconfigError(f"descriptor {self.text!r}: {msg}")

    def peek(self) -> str:
        return self.tokens[self.pos]

    def take(self) -> str:
        tok = self.tokens[self.pos]
        if tok != _END:
            self.pos += 1
        return tok

    def expect(self, tok: str) -> None:
        got = self.take()
        if got != tok:
            self.fail(f"expected {tok!r} but got {got!r}")

    def number(self, kind, what: str):
        tok = self.take()
        try:
            return kind(tok)
        except ValueError:
            self.fail(f"expected {what} but got {tok!r}")

    def descriptor(self) -> XconfigDescriptor:
        tok = self.take()
        if tok in _ARGUMENTS:
            self.expect("(")
            return XconfigDescriptor(tok, _ARGUMENTS[tok](self, tok))
        if tok in (_END, "(", ")", ",", "@"):
            self.fail(f"expected a descriptor but got {tok!r}")
        if is_valid_name(tok):
            d = XconfigDescriptor(None, (tok,))
            if self.peek() != "@":
                return d
            self.take()
            return _offset(d, self.number(int, "an integer offset after '@'"))
        if not _is_int(tok):
            self.fail(f"{tok!r} is neither a layer name, an operator nor an integer offset")
        if not self.previous_layers:
            self.fail(f"offset {tok} refers to the previous layer, but there is none")
        return _offset(XconfigDescriptor(None, (self.previous_layers[-1],)), int(tok))

    def descriptor_list(self, op: str) -> tuple:
        items = [self.descriptor()]
        while self.peek() == ",":
            self.take()
            items.append(self.descriptor())
        self.expect(")")
        wanted = {"Failover": 2, "IfDefined": 1}.get(op)
        if wanted is not None and len(items) != wanted:
            self.fail(f"{op}() takes {wanted} argument(s), got {len(items)}")
        return tuple(items)

    def offset_args(self, op: str) -> tuple:
        args = [self.descriptor()]
        self.expect(",")
        args.append(self.number(int, "an integer t-offset"))
        if self.peek() == ",":
            self.take()
            args.append(self.number(int, "an integer x-offset"))
        self.expect(")")
        return tuple(args)

    def round_args(self, op: str) -> tuple:
        arg = self.descriptor()
        self.expect(",")
        modulus = self.number(int, "an integer t-modulus")
        if modulus <= 0:
            self.fail("the t-modulus of Round() must be positive")
        self.expect(")")
        return arg, modulus

    def replace_index_args(self, op: str) -> tuple:
        arg = self.descriptor()
        self.expect(",")
        var = self.take()
        if var not in ("t", "x"):
            self.fail(f"ReplaceIndex() replaces 't' or 'x', not {var!r}")
        self.expect(",")
        value = self.number(int, "an integer index value")
        self.expect(")")
        return arg, var, value

    def scale_args(self, op: str) -> tuple:
        scale = self.number(float, "a number (the scale)")
        self.expect(",")
        arg = self.descriptor()
        self.expect(")")
        return scale, arg

    def const_args(self, op: str) -> tuple:
        value = self.number(float, "a number (the value)")
        self.expect(",")
        dim = self.number(int, "an integer dim")
        self.expect(")")
        return value, dim


_ARGUMENTS = {
    "Append": _Parser.descriptor_list, "Sum": _Parser.descriptor_list,
    "Switch": _Parser.descriptor_list, "Failover": _Parser.descriptor_list,
    "IfDefined": _Parser.descriptor_list, "Offset": _Parser.offset_args,
    "Round": _Parser.round_args, "ReplaceIndex": _Parser.replace_index_args,
    "Scale": _Parser.scale_args, "Const": _Parser.const_args,
}


def _offset(d: XconfigDescriptor, t: int) -> XconfigDescriptor:
    """`name@0` and a bare 0 mean the layer itself, not Offset(layer, 0)."""
    return d if t == 0 else XconfigDescriptor("Offset", (d, t))


def _is_int(tok: str) -> bool:
    try:
        int(tok)
    except ValueError:
        return False
    return True
