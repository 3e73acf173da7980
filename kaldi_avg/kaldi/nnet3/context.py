"""On which frames each node is computable, and the model left/right context
(`ComputeSimpleNnetContext`).

Given the `input` frames first..last, every node is computable on one span of frames
(docs/kaldi-formats.md 3.5, 3.6): a node exists at t iff its non-IfDefined inputs exist, an
Offset shifts the span, a Round(x, m) exists where its multiple of m does, and a component that
summarizes other frames says itself which outputs its input's span makes computable
(`Component.computable_frames`: the statistics components, 4.25). The graph executor computes
each node on these spans. A recurrence adds no context in either direction: Kaldi's
`ComputeSimpleNnetContext` (src/nnet3/nnet-utils.cc) counts IfDefined inputs as always
computable, so a BLSTM's backward layers (IfDefined(Offset(x, +d))) leave the right context at
that of its splicing and output delay; decoders give them more with --extra-right-context.
"""
from __future__ import annotations

from .config import NetworkConfigError
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

INF = 10 ** 9
# Inclusive frames lo..hi, empty when lo > hi; ALWAYS for values that need no `input` frame
# (an i-vector, a constant, or only IfDefined paths).
Range = tuple[int, int]
ALWAYS: Range = (-INF, INF)


def _bounded(r: Range) -> bool:
    """A non-empty span that depends on the input frames."""
    return r != ALWAYS and r[0] <= r[1]


def round_range(r: Range, modulus: int) -> Range:
    """Where Round(x, modulus) is computable when x is on `r`: the frames whose multiple of
    `modulus` at or below them lies in `r` (Kaldi's RoundingForwardingDescriptor)."""
    if not _bounded(r):
        return r
    first, last = -(-r[0] // modulus) * modulus, r[1] // modulus * modulus
    return (first, last + modulus - 1) if first <= last else (first, last)


def descriptor_range(d: Descriptor, node_range) -> Range:
    """Where `d` is computable, given `node_range(name)` for the nodes it reads."""
    if isinstance(d, NodeRef):
        return node_range(d.name)
    if isinstance(d, Offset):
        r = descriptor_range(d.arg, node_range)
        return r if r == ALWAYS else (r[0] - d.t, r[1] - d.t)
    if isinstance(d, (Append, Sum)):
        out = ALWAYS
        for c in d.children():
            r = descriptor_range(c, node_range)
            out = (max(out[0], r[0]), min(out[1], r[1]))
        return out
    if isinstance(d, (IfDefined, Const)):
        return ALWAYS
    if isinstance(d, Scale):
        return descriptor_range(d.arg, node_range)
    if isinstance(d, Round):
        return round_range(descriptor_range(d.arg, node_range), d.modulus)
    if isinstance(d, ReplaceIndex):
        if descriptor_range(d.arg, node_range) != ALWAYS:
            raise NetworkConfigError(f"{to_string(d)}: ReplaceIndex is supported only on inputs that need no "
                              "`input` frames (i-vectors)")
        return ALWAYS
    if isinstance(d, (Failover, Switch)):
        raise NetworkConfigError(f"descriptor {to_string(d)}: {type(d).__name__} is not supported by kaldi-avg")
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


def computable_ranges(nnet: Nnet, first: int, last: int) -> dict[str, Range]:
    """Where every node is computable when `input` exists on frames first..last (other input
    nodes, i-vectors, at every frame). Errors if a cycle avoids IfDefined (Kaldi: "Failure in
    ComputeSimpleNnetContext")."""
    ranges: dict[str, Range] = {}
    visiting: set[str] = set()

    def node_range(name: str) -> Range:
        if name in ranges:
            return ranges[name]
        if name in visiting:
            raise NetworkConfigError(f"node {name} depends on itself without IfDefined(Offset(...)): the output is not "
                              "computable from finite context (Failure in ComputeSimpleNnetContext)")
        visiting.add(name)
        node = nnet.node(name)
        if isinstance(node, InputNode):
            r = (first, last) if name == "input" else ALWAYS
        elif isinstance(node, DimRangeNode):
            r = node_range(node.input_node)
        elif not reads_input(nnet, node):
            r = ALWAYS
        else:
            d = node_input(nnet, node)
            for dep in strict_dependencies(d):
                node_range(dep)
            r = descriptor_range(d, node_range)
            if isinstance(node, ComponentNode) and _bounded(r):
                r = nnet.components[node.component].computable_frames(*r)
        visiting.discard(name)
        ranges[name] = r
        return r

    for n in nnet.nodes:
        node_range(n.name)
    return ranges


def is_simple_nnet(nnet: Nnet) -> bool:
    """`IsSimpleNnet`: input node `input`, output node `output`, at most one more input named `ivector`."""
    inputs = {n.name for n in nnet.input_nodes()}
    return ("input" in inputs and nnet.has_node("output") and isinstance(nnet.node("output"), OutputNode)
            and inputs <= {"input", "ivector"})


def model_context(nnet: Nnet) -> tuple[int, int]:
    """(left_context, right_context) as `nnet3-info` reports them: Kaldi's procedure (3.6) on
    `computable_ranges`. For windows of 40, 80, ... frames and each shift 0..modulus, with input
    and output requested on the window: left = frames before the first computable output,
    right = frames after the last; the maxima over the shifts. (A statistics-pooling output
    needs only one frame of its window, so an x-vector network has left context 0.)"""
    if not is_simple_nnet(nnet):
        raise NetworkConfigError("not a simple nnet: it needs input node 'input' (and optionally 'ivector') and an "
                          "output node 'output'")
    modulus = nnet.modulus()
    window = 40
    while window < 800:
        contexts = [_context_for_shift(nnet, start, window) for start in range(modulus + 1)]
        if None not in contexts:
            if contexts[0] != contexts[modulus]:
                raise NetworkConfigError(f"the network's context is not periodic in its modulus {modulus} "
                                  f"(ComputeSimpleNnetContext: {contexts[0]} vs {contexts[modulus]})")
            return max(c[0] for c in contexts), max(c[1] for c in contexts)
        window *= 2
    raise NetworkConfigError("no output frame is computable from a window of up to 640 input frames "
                      "(Failure in ComputeSimpleNnetContext)")


def _context_for_shift(nnet: Nnet, start: int, window: int) -> tuple[int, int] | None:
    end = start + window - 1
    lo, hi = computable_ranges(nnet, start, end)["output"]
    lo, hi = max(lo, start), min(hi, end)
    return None if lo > hi else (lo - start, end - hi)
