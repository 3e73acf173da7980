"""The nnet3 network: nodes + components, read/written exactly as Kaldi's `Nnet::Read/Write`,
built from config lines as `nnet3-init` does (docs/kaldi-formats.md 3.2, 5.1-5.2, 9).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..binary import KaldiFormatError, KaldiReader, KaldiWriter
from .components import Component, component_from_config, read_component
from .config import ConfigLine, NetworkConfigError, is_valid_name, name_matches_pattern, read_config_lines
from .descriptor import Descriptor, descriptor_dim, descriptor_modulus, parse_descriptor, to_string


@dataclass
class InputNode:
    name: str
    dim: int

    def config_line(self) -> str:
        return f"input-node name={self.name} dim={self.dim}"


@dataclass
class ComponentNode:
    name: str
    component: str
    input: Descriptor

    def config_line(self) -> str:
        return f"component-node name={self.name} component={self.component} input={to_string(self.input)}"


@dataclass
class DimRangeNode:
    name: str
    input_node: str
    dim_offset: int
    dim: int

    def config_line(self) -> str:
        return (f"dim-range-node name={self.name} input-node={self.input_node} "
                f"dim-offset={self.dim_offset} dim={self.dim}")


@dataclass
class OutputNode:
    name: str
    input: Descriptor
    objective: str = "linear"

    def config_line(self) -> str:
        return f"output-node name={self.name} input={to_string(self.input)} objective={self.objective}"


Node = InputNode | ComponentNode | DimRangeNode | OutputNode
# The components nnet3-copy's set-dropout-proportion edit changes (that kaldi-avg has).
DROPOUT_TYPES = ("DropoutComponent", "DropoutMaskComponent", "GeneralDropoutComponent")
NODE_LINE_TYPES = ("input-node", "component-node", "dim-range-node", "output-node")


class Nnet:
    """An nnet3 network. `nodes` keep definition order; `components` keep index order."""

    def __init__(self, nodes: list[Node], components: dict[str, Component]):
        self.nodes = nodes
        self.components = components
        self._by_name = {n.name: n for n in nodes}

    # -- structure --------------------------------------------------------------------
    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise NetworkConfigError(f"no node named {name!r}") from None

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    def node_dim(self, name: str) -> int:
        n = self.node(name)
        if isinstance(n, InputNode | DimRangeNode):
            return n.dim
        if isinstance(n, ComponentNode):
            return self.components[n.component].output_dim()
        raise NetworkConfigError(f"node {name!r} is an output node and cannot be an input to a descriptor")

    def input_dim(self, name: str = "input") -> int:
        n = self._by_name.get(name)
        return n.dim if isinstance(n, InputNode) else -1

    def output_dim(self, name: str = "output") -> int:
        n = self._by_name.get(name)
        return descriptor_dim(n.input, self.node_dim) if isinstance(n, OutputNode) else -1

    def input_nodes(self) -> list[InputNode]:
        return [n for n in self.nodes if isinstance(n, InputNode)]

    def output_nodes(self) -> list[OutputNode]:
        return [n for n in self.nodes if isinstance(n, OutputNode)]

    def config_lines(self) -> list[str]:
        return [n.config_line() for n in self.nodes]

    def config_lines_with_dims(self) -> list[str]:
        """As `nnet3-info` prints them: component nodes with input/output dims, outputs with dim."""
        out = []
        for n in self.nodes:
            if isinstance(n, ComponentNode):
                dims = (f" input-dim={descriptor_dim(n.input, self.node_dim)}"
                        f" output-dim={self.components[n.component].output_dim()}")
                out.append(n.config_line() + dims)
            elif isinstance(n, OutputNode):
                out.append(f"output-node name={n.name} input={to_string(n.input)} "
                           f"dim={descriptor_dim(n.input, self.node_dim)} objective={n.objective}")
            else:
                out.append(n.config_line())
        return out

    def info(self, context: tuple[int, int] | None = None) -> str:
        """`Nnet::Info`: contexts (for simple nnets), parameter count, nodes with dims, components."""
        lines = [] if context is None else [f"left-context: {context[0]}", f"right-context: {context[1]}"]
        lines += [f"num-parameters: {self.num_parameters()}", f"modulus: {self.modulus()}"]
        lines += self.config_lines_with_dims()
        lines += [f"component name={name} {comp.info()}" for name, comp in self.components.items()]
        return "".join(line + "\n" for line in lines)

    def set_dropout_proportion(self, proportion: float, pattern: str = "*") -> int:
        """nnet3-copy's edit `set-dropout-proportion name=<pattern> proportion=<p>`: every dropout
        component whose component name matches `pattern` gets the proportion (rounded to float,
        as Kaldi keeps it). Returns how many were set (Kaldi logs the count; 0 is no error)."""
        if not 0.0 <= proportion <= 1.0:
            raise ValueError(f"dropout proportion {proportion} is not in [0, 1]")
        matched = [c for name, c in self.components.items()
                   if c.type_name in DROPOUT_TYPES and name_matches_pattern(name, pattern)]
        for c in matched:
            c.dropout_proportion = float(np.float32(proportion))
        return len(matched)

    def modulus(self) -> int:
        """`Nnet::Modulus`: the lcm of the node descriptors' moduli (docs/kaldi-formats.md 5.3)."""
        out = 1
        for n in self.nodes:
            if isinstance(n, ComponentNode | OutputNode):
                out = math.lcm(out, descriptor_modulus(n.input))
        return out

    def num_parameters(self) -> int:
        return sum(c.num_params() for c in self.components.values())

    def check(self) -> None:
        """`Nnet::Check` plus the consistency checks Kaldi leaves to compute time (pitfall 10)."""
        if not self.input_nodes():
            raise NetworkConfigError("network has no input node")
        if not self.output_nodes():
            raise NetworkConfigError("network has no output node")
        for n in self.nodes:
            if isinstance(n, ComponentNode | OutputNode):
                for dep in n.input.node_names():
                    src = self._by_name.get(dep)
                    if src is None:
                        raise NetworkConfigError(f"node {n.name}: descriptor refers to unknown node {dep!r}")
                    if isinstance(src, OutputNode):
                        raise NetworkConfigError(f"node {n.name}: descriptor refers to output node {dep!r}")
                dim = descriptor_dim(n.input, self.node_dim)
            if isinstance(n, ComponentNode):
                comp = self.components.get(n.component)
                if comp is None:
                    raise NetworkConfigError(f"node {n.name}: no component named {n.component!r}")
                if dim != comp.input_dim():
                    raise NetworkConfigError(f"Dimension mismatch for network-node {n.name}: input-dim {dim} "
                                      f"versus component-input-dim {comp.input_dim()}")
            elif isinstance(n, DimRangeNode):
                src = self._by_name.get(n.input_node)
                if not isinstance(src, InputNode | ComponentNode):
                    raise NetworkConfigError(f"dim-range-node {n.name}: input-node {n.input_node!r} must be an "
                                      "input-node or component-node")
                src_dim = self.node_dim(n.input_node)
                if not (n.dim > 0 and n.dim_offset >= 0 and n.dim + n.dim_offset <= src_dim):
                    raise NetworkConfigError(f"Invalid node dimensions for DimRange node: {n.name}: "
                                      f"input-dim={src_dim}, dim={n.dim}, dim-offset={n.dim_offset}")
        for name, comp in self.components.items():
            try:
                comp.validate()
            except (ValueError, KaldiFormatError) as e:
                raise NetworkConfigError(f"component {name}: {e}") from None

    # -- config lines (nnet3-init) ----------------------------------------------------------
    @classmethod
    def from_config(cls, text: str, source: str = "<config>", rng: np.random.Generator | None = None,
                    existing: Nnet | None = None) -> Nnet:
        """`nnet3-init [existing.raw] config out.raw`: components first, then nodes (two passes, so
        forward references work); a node redefined by the config replaces the existing one."""
        rng = rng or np.random.default_rng(0)
        lines = read_config_lines(text, source)
        components = dict(existing.components) if existing else {}
        new_components: set[str] = set()
        node_lines: list[ConfigLine] = ([ConfigLine.parse(line, "<existing network>")
                                         for line in existing.config_lines()] if existing else [])
        n_existing = len(node_lines)
        for cl in lines:
            name = cl.get_str("name")
            if not is_valid_name(name):
                raise NetworkConfigError(f"{cl.where}: name {name!r} is not allowed in: {cl.text}")
            if cl.first == "component":
                if name in new_components:
                    raise NetworkConfigError(f"{cl.where}: component name {name} appears twice in the same config")
                new_components.add(name)
                components[name] = component_from_config(cl, rng)
            elif cl.first in NODE_LINE_TYPES:
                node_lines.append(cl)
            else:
                raise NetworkConfigError(f"{cl.where}: invalid config line ({cl.first!r} not expected): {cl.text}")
        # A node defined again replaces the earlier definition (RemoveRedundantConfigLines).
        last: dict[str, int] = {}
        for i, cl in enumerate(node_lines):
            name = cl.values["name"]
            if name in last and last[name] >= n_existing:
                raise NetworkConfigError(f"{cl.where}: node name {name} appears twice in the same config")
            last[name] = i
        kept = [cl for i, cl in enumerate(node_lines) if last[cl.values["name"]] == i]
        nnet = cls([_node_from_config(cl) for cl in kept], components)
        nnet.check()
        return nnet

    # -- serialization ------------------------------------------------------------------
    def write(self, w: KaldiWriter) -> None:
        w.token("<Nnet3>")
        w.raw("\n" + "".join(line + "\n" for line in self.config_lines()) + "\n")
        w.token("<NumComponents>")
        w.int32(len(self.components))
        w.newline()
        for name, comp in self.components.items():
            w.token("<ComponentName>")
            w.token(name)
            comp.write(w)
            w.newline()
        w.token("</Nnet3>")

    @classmethod
    def read(cls, r: KaldiReader) -> Nnet:
        r.expect_token("<Nnet3>")
        if r.read_line().strip("\r") != "":
            raise r.error("Expected newline in config file after <Nnet3>")
        text_lines = []
        while True:
            line = r.read_line()
            if line.strip("\r") == "":
                break
            text_lines.append(line)
        r.expect_token("<NumComponents>")
        num = r.read_int32()
        if not 0 <= num < 100000:
            raise r.error(f"invalid number of components {num}")
        components: dict[str, Component] = {}
        for _ in range(num):
            r.expect_token("<ComponentName>")
            name = r.read_token()
            start = r.pos
            try:
                components[name] = read_component(r)
            except KaldiFormatError as e:
                raise KaldiFormatError(f"component {name} (starting at byte {start}): {e}") from None
        r.expect_token("</Nnet3>")
        try:
            nodes = [_node_from_config(cl) for cl in read_config_lines("\n".join(text_lines), r.source)]
            nnet = cls(nodes, components)
            nnet.check()
        except NetworkConfigError as e:
            raise KaldiFormatError(f"{r.source}: {e}") from None
        return nnet

    def to_bytes(self, binary: bool = True) -> bytes:
        w = KaldiWriter(binary)
        w.header()
        self.write(w)
        return w.getvalue()


def _node_from_config(cl: ConfigLine) -> Node:
    name = cl.get_str("name")
    if not is_valid_name(name):
        raise NetworkConfigError(f"{cl.where}: node name {name!r} is not allowed")
    if cl.first == "input-node":
        node: Node = InputNode(name, cl.get_int("dim"))
        if node.dim <= 0:
            raise NetworkConfigError(f"{cl.where}: invalid dimension in: {cl.text}")
    elif cl.first == "component-node":
        node = ComponentNode(name, cl.get_str("component"), parse_descriptor(cl.get_str("input")))
    elif cl.first == "dim-range-node":
        node = DimRangeNode(name, cl.get_str("input-node"), cl.get_int("dim-offset"), cl.get_int("dim"))
    elif cl.first == "output-node":
        objective = cl.get_str("objective", "linear")
        if objective not in ("linear", "quadratic", "xent-per-dim"):
            raise NetworkConfigError(f"{cl.where}: invalid objective type {objective!r}")
        node = OutputNode(name, parse_descriptor(cl.get_str("input")), objective)
    else:
        raise NetworkConfigError(f"{cl.where}: invalid config line ({cl.first!r} not expected): {cl.text}")
    cl.check_all_used()
    return node
