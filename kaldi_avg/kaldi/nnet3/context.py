"""Which input frames each node needs: model left/right context (`ComputeSimpleNnetContext`).

For networks whose recurrences all go through `IfDefined(Offset(...))` the answer is analytic
(docs/kaldi-formats.md 3.1, 3.6): a node at time t needs the `input` frames t+lo .. t+hi over
its non-IfDefined dependency paths. The same ranges tell the graph executor on which frames
each node is computable. A recurrence adds no context in either direction: Kaldi's
`ComputeSimpleNnetContext` (src/nnet3/nnet-utils.cc) counts IfDefined inputs as always
computable, so a BLSTM's backward layers (IfDefined(Offset(x, +d))) leave the right context at
that of its splicing and output delay; decoders give them more with --extra-right-context.
"""
from __future__ import annotations

from .config import ConfigError
from .descriptor import (
    Append,
    Const,
    Descriptor,
    Failover,
    IfDefined,
    NodeRef,
    Offset,
    ReplaceIndex,
    Round,
    Scale,
    Sum,
    Switch,
    to_string,
)
from .nnet import ComponentNode, DimRangeNode, InputNode, Nnet, Node, OutputNode

# (lo, hi) offsets of the `input` frames a value needs; None = needs no `input` frame
# (an i-vector, a constant, or only IfDefined paths).
Span = tuple[int, int] | None


def _union(a: Span, b: Span) -> Span:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), max(a[1], b[1]))


def descriptor_span(d: Descriptor, node_span) -> Span:
    """Input frames `d` needs at time t, given `node_span(name)` for the nodes it reads."""
    if isinstance(d, NodeRef):
        return node_span(d.name)
    if isinstance(d, Offset):
        s = descriptor_span(d.arg, node_span)
        return None if s is None else (s[0] + d.t, s[1] + d.t)
    if isinstance(d, (Append, Sum)):
        out: Span = None
        for c in d.children():
            out = _union(out, descriptor_span(c, node_span))
        return out
    if isinstance(d, (IfDefined, Const)):
        return None
    if isinstance(d, Scale):
        return descriptor_span(d.arg, node_span)
    if isinstance(d, ReplaceIndex):
        if descriptor_span(d.arg, node_span) is not None:
            raise ConfigError(f"{to_string(d)}: ReplaceIndex is supported only on inputs that need no "
                              "`input` frames (i-vectors)")
        return None
    if isinstance(d, (Failover, Round, Switch)):
        raise ConfigError(f"descriptor {to_string(d)}: {type(d).__name__} is not supported by kaldi-avg")
    raise TypeError(d)


def strict_dependencies(d: Descriptor) -> list[str]:
    """Nodes that must be computed before `d` at the same or other frames (not under IfDefined)."""
    if isinstance(d, IfDefined):
        return []
    if isinstance(d, NodeRef):
        return [d.name]
    out: list[str] = []
    for c in d.children():
        out.extend(strict_dependencies(c))
    return out


def reads_input(nnet: Nnet, node: Node) -> bool:
    """Whether a node's input descriptor is evaluated (not for components that take no input)."""
    return not isinstance(node, ComponentNode) or nnet.components[node.component].READS_INPUT


def node_input(nnet: Nnet, node: ComponentNode | OutputNode) -> Descriptor:
    """The descriptor a node's computation reads: its input, spliced the way its component
    splices it (TdnnComponent's time offsets; `Component.input_descriptor`)."""
    if isinstance(node, ComponentNode):
        return nnet.components[node.component].input_descriptor(node.input)
    return node.input


def node_spans(nnet: Nnet) -> dict[str, Span]:
    """Span of every node. Errors if a cycle avoids IfDefined (Kaldi: "Failure in
    ComputeSimpleNnetContext")."""
    spans: dict[str, Span] = {}
    visiting: set[str] = set()

    def span(name: str) -> Span:
        if name in spans:
            return spans[name]
        if name in visiting:
            raise ConfigError(f"node {name} depends on itself without IfDefined(Offset(...)): the output is not "
                              "computable from finite context (Failure in ComputeSimpleNnetContext)")
        visiting.add(name)
        node = nnet.node(name)
        if isinstance(node, InputNode):
            s: Span = (0, 0) if name == "input" else None
        elif isinstance(node, DimRangeNode):
            s = span(node.input_node)
        elif not reads_input(nnet, node):
            s = None
        else:
            d = node_input(nnet, node)
            for dep in strict_dependencies(d):
                span(dep)
            s = descriptor_span(d, span)
        visiting.discard(name)
        spans[name] = s
        return s

    for n in nnet.nodes:
        span(n.name)
    return spans


def is_simple_nnet(nnet: Nnet) -> bool:
    """`IsSimpleNnet`: input node `input`, output node `output`, at most one more input named `ivector`."""
    inputs = {n.name for n in nnet.input_nodes()}
    return ("input" in inputs and nnet.has_node("output") and isinstance(nnet.node("output"), OutputNode)
            and inputs <= {"input", "ivector"})


def model_context(nnet: Nnet) -> tuple[int, int]:
    """(left_context, right_context) as `nnet3-info` reports them."""
    if not is_simple_nnet(nnet):
        raise ConfigError("not a simple nnet: it needs input node 'input' (and optionally 'ivector') and an "
                          "output node 'output'")
    s = node_spans(nnet)["output"]
    if s is None:
        return 0, 0
    return max(0, -s[0]), max(0, s[1])
