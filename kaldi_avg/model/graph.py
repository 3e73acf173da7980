"""An nnet3 network as a PyTorch module: nnet3's computation semantics, evaluated efficiently.

Any network made of the supported components and the descriptors Offset/Append/Sum/Scale/
Const/IfDefined/Round/ReplaceIndex(ivector) runs here, so a model built from an xconfig file and a
model trained by Kaldi are the same kind of object. Semantics (docs/kaldi-formats.md 3.5):
a node exists at frame t iff all its non-IfDefined inputs exist; IfDefined gives zeros where
its argument does not exist, so recurrent state starts from zero. Where nodes exist comes from
`context.computable_ranges`; a component that summarizes other frames (the statistics
components, 4.25) names the input frames it reads (`Component.input_frames`) and is given
those of them that exist.

Execution: nodes outside recurrent loops are computed for all their frames in one batched
call; the nodes of a recurrent loop (a strongly connected component of the node graph) are
stepped frame by frame, with the parts of their inputs that come from outside the loop
precomputed for all frames (for affine components, including the matrix product). A loop
whose recurrences read the future (IfDefined(Offset(x, +d)), a BLSTM's backward layers) is
stepped from its last computable frame down, its state zero beyond that frame; one loop
cannot read both past and future. The loop of a fast-lstm or fast-lstmp layer is recognized and
stepped as one node (`lstm_loop.py`); `NnetModule(..., fuse_lstm=False)` steps it like any loop.

Strides: `forward_outputs(..., output_stride=s)` asks for the outputs at frames 0, s, 2s, ...
only (a chain network's frame subsampling), and each node is computed only at the frames those
need, as Kaldi's computation graph asks for exactly the Indexes it needs. Each node gets a grid,
the frames phase + k stride with stride dividing s, that holds every frame it is needed at
(`_grids`: from the outputs down, a consumer on grid (r, s_c) reading a node at offset o needs
it on (r + o mod s_c, s_c); the grids of several consumers join into the coarsest one holding
both). A node is computed on the frames of its grid within its needed range and stored as
(N, T, dim) with its first frame and stride. What a Round or a statistics component reads
runs at stride 1 (spans of frames), and so does a statistics component; a recurrent loop runs
on one grid whose stride divides its recurrence offsets (fast-lstmp with delay -3 keeps stride 3
and steps over its grid, one grid frame per step; delay -1 falls to stride 1); a node at
stride 1 reads its inputs at stride 1. So in a
chain TDNN-LSTM the first delay -3 LSTM, the layer feeding it and everything above run at every
third frame, and BatchNorm's minibatch statistics and the natural-gradient rows are those of the
frames computed, as in Kaldi; the values at each computed frame are those of the stride-1
computation.

Natural gradient: a component's natural-gradient update is computed once per forward/backward
computation from all rows it saw (every frame of a recurrent loop included, frames before
min_deriv_time excluded), as Kaldi's consolidated model update does (`ops.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..kaldi.nnet3.config import NetworkConfigError
from ..kaldi.nnet3.context import INF, computable_ranges, node_input, reads_input, round_range
from ..kaldi.nnet3.descriptor import (
    Append,
    Const,
    Descriptor,
    IfDefined,
    NodeRef,
    Offset,
    ReplaceIndex,
    Round,
    Scale,
    Sum,
    descriptor_dim,
)
from ..kaldi.nnet3.nnet import ComponentNode, DimRangeNode, InputNode, Nnet, OutputNode
from . import lstm_loop
from .ops import AFFINE_TYPES, ComponentOp

Range = tuple[int, int]  # inclusive frame range; empty when lo > hi
Grid = tuple[int, int]   # (phase, stride): the frames phase + k stride, 0 <= phase < stride

# Component types whose output is a function of their input and of tensors that training never
# changes (no trainable tensors, no statistics, no randomness, the same in training and test mode):
# their values on a minibatch can be kept for the next evaluation of it (`forward_outputs`' cache).
FIXED_TYPES = ("FixedAffineComponent", "FixedScaleComponent", "FixedBiasComponent", "NoOpComponent")


def _refs(d: Descriptor, lo: int = 0, hi: int = 0, under_ifdef: bool = False, out=None):
    """(node, lo, hi, under_ifdefined) for every node a descriptor reads: at frame t, one of
    the node's frames t+lo .. t+hi (one frame, lo == hi, except under a Round)."""
    out = [] if out is None else out
    if isinstance(d, NodeRef):
        out.append((d.name, lo, hi, under_ifdef))
    elif isinstance(d, Offset):
        _refs(d.arg, lo + d.t, hi + d.t, under_ifdef, out)
    elif isinstance(d, Round):
        _refs(d.arg, lo - (d.modulus - 1), hi, under_ifdef, out)
    elif isinstance(d, IfDefined):
        _refs(d.arg, lo, hi, True, out)
    elif isinstance(d, ReplaceIndex):
        _refs(d.arg, 0, 0, under_ifdef, out)  # i-vectors: time-invariant
    else:
        for c in d.children():
            _refs(c, lo, hi, under_ifdef, out)
    return out


def _strongly_connected(names: list[str], deps: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm; components come out dependencies-first."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        work = [(v, iter(deps[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(deps[w])))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    out.append(comp)

    for v in names:
        if v not in index:
            visit(v)
    return out


def _per_frame(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(N, T, D) -> T views of (N, D), for a recurrence that reads one frame per step: the backward
    of the views is one stack, where slicing [:, t] per step would zero-fill the whole (N, T, D)
    gradient every frame (O(T^2) memory traffic)."""
    return values.unbind(1)


def _join(a: Grid | None, b: Grid) -> Grid:
    """The coarsest grid holding the frames of both."""
    if a is None:
        return b
    g = math.gcd(a[1], b[1], a[0] - b[0])
    return a[0] % g, g


def _up(t: int, grid: Grid) -> int:
    """The first frame of `grid` at or after t."""
    return t + (grid[0] - t) % grid[1]


def _down(t: int, grid: Grid) -> int:
    """The last frame of `grid` at or before t."""
    return t - (t - grid[0]) % grid[1]


def _count(lo: int, hi: int, step: int) -> int:
    """Frames lo, lo + step, ..., hi (hi on the grid of lo; none when lo > hi)."""
    return (hi - lo) // step + 1 if lo <= hi else 0


@dataclass
class _Loop:
    """A recurrent strongly connected component, stepped frame by frame: forward in time when
    its recurrences read the past (Offset < 0, LSTM delay=-d), backward in time when they read
    the future (Offset > 0, the backward layers of a BLSTM)."""
    members: list[str]  # in within-frame evaluation order
    offsets: set[int] = field(default_factory=set)
    fast: lstm_loop.FastLstmLayer | None = None   # a fast LSTM layer, stepped as one node
    read_outside: frozenset[str] = frozenset()     # members that nodes outside the loop read

    @property
    def backward(self) -> bool:
        return max(self.offsets) > 0


class NnetModule(nn.Module):
    """`forward(feats, left_context, num_frames)` computes the output node on frames
    0..num_frames-1, where `feats[:, i]` is the input at frame i - left_context."""

    def __init__(self, nnet: Nnet, output: str = "output", fuse_lstm: bool = True):
        """`fuse_lstm`: step the loops of fast LSTM layers as one node (`lstm_loop.py`); False
        steps them node by node like any other loop (the same values, slower)."""
        super().__init__()
        self.nnet = nnet
        self.output_name = output
        self.ops = nn.ModuleDict()
        self._op_key: dict[str, str] = {}
        for name, comp in nnet.components.items():
            # torch module names cannot hold '.'; ':' never occurs in Kaldi names, so keys stay distinct
            key = name.replace(".", ":")
            self.ops[key] = ComponentOp(comp)
            self._op_key[name] = key
        computable_ranges(nnet, 0, 0)  # rejects a recurrence without IfDefined, as Kaldi does
        self._deps: dict[str, list[tuple[str, int, int, bool]]] = {}
        for n in nnet.nodes:
            if not reads_input(nnet, n):
                self._deps[n.name] = []
            elif isinstance(n, (ComponentNode, OutputNode)):
                self._deps[n.name] = _refs(node_input(nnet, n))
            elif isinstance(n, DimRangeNode):
                self._deps[n.name] = [(n.input_node, 0, 0, False)]
            else:
                self._deps[n.name] = []
        self._order = self._plan()
        if fuse_lstm:
            self._find_fast_lstms()
        self._fixed = self._find_fixed()
        # (first input frame, last input frame, output frames, outputs, stride) -> the frames each
        # node is computed on and its grid: the same few chunk shapes recur every minibatch, so
        # each is planned once.
        self._needs: dict[tuple, tuple[dict[str, Range], dict[str, Grid | None]]] = {}
        self._grid_plans: dict[tuple[tuple[str, ...], int], dict[str, Grid | None]] = {}

    # -- planning -----------------------------------------------------------------------
    def _plan(self) -> list[str | _Loop]:
        names = [n.name for n in self.nnet.nodes]
        sccs = _strongly_connected(names, {n: [d for d, *_ in self._deps[n]] for n in names})
        order: list[str | _Loop] = []
        for comp in sccs:
            members = set(comp)
            internal = [(m, d, k) for m in comp for d, lo, hi, _ in self._deps[m] if d in members
                        for k in {lo, hi}]
            if len(comp) == 1 and not internal:
                order.append(comp[0])
                continue
            if any(self._summarizes_frames(m) for m in comp):
                raise NetworkConfigError(f"recurrence among {sorted(comp)} goes through a component that summarizes "
                                  "other frames (statistics pooling): not supported by kaldi-avg")
            offsets = {k for _, _, k in internal}
            if min(offsets) < 0 < max(offsets):
                raise NetworkConfigError(f"recurrence among {sorted(comp)} reads both past and future frames "
                                  f"(offsets {sorted(offsets)}): it cannot be stepped in either direction")
            # Within one frame, members depend on each other only through offset-0 references.
            same_frame = {m: [d for mm, d, k in internal if mm == m and k == 0] for m in comp}
            within = [c[0] for c in _strongly_connected(sorted(comp), same_frame)]
            if len(within) != len(comp):
                raise NetworkConfigError(f"nodes {sorted(comp)} depend on each other at the same frame")
            order.append(_Loop(within, offsets))
        return order

    def _find_fast_lstms(self) -> None:
        for loop in self._order:
            if not isinstance(loop, _Loop):
                continue
            inside = set(loop.members)
            read = frozenset(d for n, deps in self._deps.items() if n not in inside for d, *_ in deps if d in inside)
            layer = lstm_loop.match(self.nnet, loop.members)
            if layer is not None and read <= lstm_loop.readable(layer):
                loop.fast, loop.read_outside = layer, read

    def _find_fixed(self) -> dict[str, tuple[str, ...]]:
        """The component nodes computed from the inputs through FIXED_TYPES alone (an LDA): the
        same values for a minibatch in every evaluation of every model that has the same tensors;
        each with the fixed component nodes it reads (directly or through dim-range nodes)."""
        sources: dict[str, tuple[str, ...]] = {n.name: () for n in self.nnet.nodes if isinstance(n, InputNode)}
        components = {}
        for item in self._order:
            if isinstance(item, _Loop):
                continue
            node = self.nnet.node(item)
            deps = [d for d, *_ in self._deps[item]]
            if isinstance(node, DimRangeNode) and node.input_node in sources:
                sources[item] = sources[node.input_node]
            elif isinstance(node, ComponentNode) and reads_input(self.nnet, node) and deps \
                    and self.nnet.components[node.component].type_name in FIXED_TYPES \
                    and not self._summarizes_frames(item) and all(d in sources for d in deps):
                components[item] = tuple(sorted({c for d in deps for c in sources[d]}))
                sources[item] = (item,)
        return components

    def op(self, component_name: str) -> ComponentOp:
        return self.ops[self._op_key[component_name]]

    def write_back(self) -> None:
        """Copies the trained tensors into `self.nnet`'s components (before export), including
        the training statistics (BatchNorm; Sigmoid/Tanh/LstmNonlinearity value and derivative
        averages and counts, as nnet3-train leaves them in its output model)."""
        for op in self.ops.values():
            op.write_back()

    def set_dropout_proportion(self, proportion: float, pattern: str = "*") -> int:
        """nnet3-copy's `set-dropout-proportion name=<pattern> proportion=<p>` edit on this network
        (`Nnet.set_dropout_proportion`). The ops read the proportion from their component on every
        forward, and export writes the components, so it takes effect at once and the exported
        model records it. Returns how many components were set."""
        return self.nnet.set_dropout_proportion(proportion, pattern)

    def reset_preconditioners(self) -> None:
        """Forgets every natural-gradient preconditioner's estimate, as at the start of an
        nnet3-train job (Kaldi never stores them in a model); each re-initializes from the next
        minibatch it sees. The estimates are not parameters or buffers, so they are neither
        averaged nor checkpointed."""
        for op in self.ops.values():
            op.reset_preconditioners()

    def set_natural_gradient(self, enabled: bool) -> None:
        """True (the default): the components that use natural gradient in Kaldi
        (NaturalGradientAffine, LinearComponent with use-natural-gradient, NaturalGradient-
        PerElementScale, LstmNonlinearity peepholes; not those with <IsGradient> true) produce
        the natural-gradient update direction as their gradient in training. False: plain
        gradients everywhere (Kaldi's is-gradient / UpdateSimple behaviour)."""
        for op in self.ops.values():
            op.use_natural_gradient = bool(enabled) and op.has_natural_gradient and \
                not getattr(op.component, "is_gradient", False)

    def batchnorm_ops(self) -> list[ComponentOp]:
        return [op for op in self.ops.values() if op.type_name == "BatchNormComponent"]

    def scale_batchnorm_stats(self, scale: float) -> None:
        """nnet3-train's ScaleBatchnormStats after every update (--batchnorm-stats-scale, 0.8,
        which train_rnn.py leaves at its default): the statistics a BatchNorm keeps for test mode
        weight the latest minibatches most (docs/kaldi-formats.md 6.5)."""
        for op in self.batchnorm_ops():
            op.scale_stats(scale)

    def zero_stats(self) -> None:
        """nnet3-train's ZeroComponentStats: clears every component's training statistics, so
        what is accumulated from here on is one job's (call at the start of each job). The
        statistics are module buffers, so averaging the module state averages them as
        nnet3-average does (sums and counts alike)."""
        for op in self.ops.values():
            op.zero_stats()

    # -- ranges -------------------------------------------------------------------------
    def _summarizes_frames(self, name: str) -> bool:
        node = self.nnet.node(name)
        return isinstance(node, ComponentNode) and self.nnet.components[node.component].SUMMARIZES_FRAMES

    def _input_frames(self, name: str, lo: int, hi: int) -> Range:
        """The frames of its input descriptor that node `name` reads for outputs lo..hi."""
        node = self.nnet.node(name)
        if isinstance(node, ComponentNode):
            return self.nnet.components[node.component].input_frames(lo, hi)
        return lo, hi

    def _need(self, t0: int, t1: int, num_frames: int, outputs: tuple[str, ...] | None = None,
              stride: int = 1) -> tuple[dict[str, Range], dict[str, Grid | None]]:
        """The frames each node is computed on (on its grid) to give frames 0, stride, ... of
        0..num_frames-1 of the output nodes `outputs` (default: the module's output) from input
        frames t0..t1, and the grids (cached: read-only for the caller)."""
        outputs = outputs or (self.output_name,)
        key = (t0, t1, num_frames, outputs, stride)
        if key not in self._needs:
            if stride < 1:
                raise ValueError(f"output stride {stride} must be >= 1")
            last = (num_frames - 1) // stride * stride
            comp = computable_ranges(self.nnet, t0, t1)
            for name in outputs:
                if name not in comp:
                    raise ValueError(f"the network has no output node {name!r}")
                oc = comp[name]
                if oc[0] > 0 or oc[1] < last:
                    raise ValueError(f"{t1 - t0 + 1} input frames with left context {-t0} cannot produce output "
                                     f"frames 0..{last} of {name!r} (computable: {oc[0]}..{oc[1]})")
            grids = self._grids(outputs, stride)
            self._needs[key] = (self._needed(comp, last, outputs, grids), grids)
        return self._needs[key]

    def _grids(self, outputs: tuple[str, ...], stride: int) -> dict[str, Grid | None]:
        """The grid each node is computed on when the output nodes `outputs` are wanted at
        frames 0, stride, 2 stride, ... (None: a node they do not read); the module docstring
        says how."""
        key = (outputs, stride)
        if key in self._grid_plans:
            return self._grid_plans[key]
        grid: dict[str, Grid | None] = {n: None for n in self._deps}
        for name in outputs:
            grid[name] = (0, stride)
        for item in reversed(self._order):
            members = item.members if isinstance(item, _Loop) else [item]
            inside = set(members) if isinstance(item, _Loop) else set()
            if inside:
                joined = None
                for m in members:
                    if grid[m] is not None:
                        joined = _join(joined, grid[m])
                if joined is None:
                    continue
                # One grid for the whole loop, fine enough that every recurrence lands on it.
                s = joined[1]
                for m in members:
                    for dep, lo, hi, _ in self._deps[m]:
                        if dep in inside:
                            s = math.gcd(s, lo) if lo == hi else 1
                for m in members:
                    grid[m] = (joined[0] % s, s)
            for m in members:
                if grid[m] is None:
                    continue
                if self._summarizes_frames(m):
                    grid[m] = (0, 1)     # it reads (and Kaldi computes) spans of frames
                r, s = grid[m]
                for dep, lo, hi, _ in self._deps[m]:
                    if dep not in inside:  # a Round reads a span of frames: stride 1
                        grid[dep] = _join(grid[dep], ((r + lo) % s, s) if lo == hi else (0, 1))
        self._grid_plans[key] = grid
        return grid

    def _needed(self, comp: dict[str, Range], last: int, outputs: tuple[str, ...],
                grids: dict[str, Grid | None]) -> dict[str, Range]:
        need: dict[str, Range] = {n: (INF, -INF) for n in self._deps}
        for name in outputs:
            need[name] = (0, last)

        def add(dep: str, lo: int, hi: int) -> bool:
            c, g = comp[dep], grids[dep]
            lo, hi = _up(max(lo, c[0]), g), _down(min(hi, c[1]), g)
            old = need[dep]
            new = (min(old[0], lo), max(old[1], hi)) if lo <= hi else old
            need[dep] = new
            return new != old

        for item in reversed(self._order):
            members = item.members if isinstance(item, _Loop) else [item]
            if isinstance(item, _Loop):
                self._extend_to_loop_start(item, comp, need, add, grids[item.members[0]])
            for m in members:
                lo, hi = need[m]
                if lo > hi:
                    continue
                lo, hi = self._input_frames(m, lo, hi)
                for dep, k_lo, k_hi, _ in self._deps[m]:
                    add(dep, lo + k_lo, hi + k_hi)
        return need

    def _extend_to_loop_start(self, loop: _Loop, comp: dict[str, Range], need: dict[str, Range], add,
                              grid: Grid | None) -> None:
        """A loop member's value at a frame depends on every frame from where the loop starts:
        the first frame where it is computable, or for a backward loop the last, since beyond
        it IfDefined gives zero state (docs/kaldi-formats.md 3.5). Members that read only the
        recurrence (IfDefined) are computable anywhere; they start with the loop. On a strided
        grid, the loop starts at the grid's first frame there (the recurrence stays on it)."""
        members = loop.members
        if grid is None:
            return
        if loop.backward:
            end = max((comp[m][1] for m in members if comp[m][1] < INF), default=INF)
            if end == INF:
                raise NetworkConfigError(f"recurrent nodes {sorted(members)} do not depend on the input")
            start = {m: _down(min(comp[m][1], end), grid) for m in members}
        else:
            first = min((comp[m][0] for m in members if comp[m][0] > -INF), default=-INF)
            if first == -INF:
                raise NetworkConfigError(f"recurrent nodes {sorted(members)} do not depend on the input")
            start = {m: _up(max(comp[m][0], first), grid) for m in members}

        def from_start(m: str, lo: int, hi: int) -> Range:
            return (lo, start[m]) if loop.backward else (start[m], hi)

        for m in members:
            if need[m][0] <= need[m][1]:
                need[m] = from_start(m, *need[m])
        changed = True
        while changed:
            changed = False
            for m in members:
                lo, hi = need[m]
                if lo > hi:
                    continue
                for dep, k_lo, k_hi, _ in self._deps[m]:
                    if dep in members:
                        changed |= add(dep, *from_start(dep, lo + k_lo, hi + k_hi))

    # -- evaluation ---------------------------------------------------------------------
    def forward(self, feats: torch.Tensor, left_context: int, num_frames: int,
                ivectors: torch.Tensor | None = None, min_deriv_time: int | None = None,
                max_deriv_time: int | None = None, output_stride: int = 1) -> torch.Tensor:
        """The output node's values, (N, (num_frames - 1) // output_stride + 1, dim); see
        `forward_outputs`."""
        return self.forward_outputs(feats, left_context, num_frames, ivectors, min_deriv_time, max_deriv_time,
                                    output_stride=output_stride)[0]

    def forward_outputs(self, feats: torch.Tensor, left_context: int, num_frames: int,
                        ivectors: torch.Tensor | None = None, min_deriv_time: int | None = None,
                        max_deriv_time: int | None = None, outputs: tuple[str, ...] | None = None,
                        cache: dict | None = None, output_stride: int = 1) -> list[torch.Tensor]:
        """The values of the output nodes `outputs` (default: the module's output) on frames
        0, s, 2s, ... up to num_frames-1 (s = `output_stride`; a chain network's frame-subsampling
        factor), (N, (num_frames - 1) // s + 1, dim) each, in one computation (a chain network's
        'output' and 'output-xent' share everything below their last layers); each node is
        computed only at the frames these need (module docstring, "Strides").
        `min_deriv_time`/`max_deriv_time`: nnet3-train's
        --optimization.min-deriv-time and max-deriv-time (train_rnn.py: -(deriv_truncate_margin +
        model left context) and num_frames - 1 + deriv_truncate_margin + model right context, the latter given to
        nnet3-train as --optimization.max-deriv-time-relative), in frames; recurrent loops propagate no
        derivative through frames outside them, forward loops before the one, backward loops
        (BLSTMs trained with --egs.chunk-right-context) after the other.

        `cache`: a dict kept with this minibatch (features and i-vectors) between evaluations
        without gradients (diagnostics, combination): the values of the fixed nodes (`_find_fixed`)
        are taken from it when their components' tensors are those it was filled with, else
        computed and stored; the same values either way."""
        N, T_in, _ = feats.shape
        t0, t1 = -left_context, T_in - left_context - 1
        outputs = outputs or (self.output_name,)
        need, grids = self._need(t0, t1, num_frames, outputs, output_stride)
        vals: dict[str, tuple[torch.Tensor, int, int]] = {}  # name -> (N, T, dim) values, first frame, stride
        for node in self.nnet.input_nodes():
            if node.name == "input":
                lo, hi = need["input"]
                step = grids["input"][1] if grids["input"] else 1
                vals["input"] = (feats[:, lo - t0:hi - t0 + 1:step], lo, step)
            else:
                if ivectors is None:
                    raise ValueError(f"the network has an input node {node.name!r}; pass ivectors")
                vals[node.name] = (ivectors.unsqueeze(1), -INF, 1)  # time-invariant
        ctx = _Eval(self, vals, need, grids, feats, min_deriv_time, max_deriv_time)
        ng_ops = [op for op in self.ops.values() if op.has_natural_gradient]
        for op in ng_ops:
            op.begin_pass(min_deriv_time, max_deriv_time)
        cached = cache if cache is not None and self._fixed and not torch.is_grad_enabled() else None
        reused: set[str] = set()
        try:
            for item in self._order:
                if isinstance(item, _Loop):
                    ctx.run_loop(item)
                elif item not in vals and need[item][0] <= need[item][1]:
                    if cached is not None and item in self._fixed:
                        self._run_fixed(ctx, item, cached, reused)
                    else:
                        ctx.run_node(item)
        finally:
            for op in ng_ops:
                op.end_pass()
        return [vals[name][0] for name in outputs]

    def _run_fixed(self, ctx: _Eval, name: str, cache: dict, reused: set[str]) -> None:
        """A fixed node from `cache` (if its fixed inputs came from there too and its component
        holds the tensors the entry was computed with), else computed and stored."""
        node = self.nnet.node(name)
        tensors = list(self.op(node.component).buffers(recurse=False))
        key = ("fixed", name, ctx.need[name], ctx.step(name), ctx.device)
        entry = cache.get(key)
        if entry is not None and all(d in reused for d in self._fixed[name]) and len(entry[1]) == len(tensors) \
                and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(entry[1], tensors)):
            ctx.vals[name] = entry[0]
            reused.add(name)
            return
        ctx.run_node(name)
        cache[key] = (ctx.vals[name], [t.clone() for t in tensors])


class _Eval:
    """State of one forward computation. Frames are absolute; a range lo..hi with a step means
    the frames lo, lo + step, ..., hi."""

    def __init__(self, module: NnetModule, vals, need, grids, feats, min_deriv_time, max_deriv_time):
        self.m = module
        self.vals = vals
        self.need = need
        self.grids = grids
        self.N = feats.shape[0]
        self.dtype = feats.dtype
        self.device = feats.device
        self.min_deriv_time = -INF if min_deriv_time is None else min_deriv_time
        self.max_deriv_time = INF if max_deriv_time is None else max_deriv_time

    def step(self, name: str) -> int:
        """The stride of node `name`'s grid."""
        return self.grids[name][1]

    def _zeros(self, T: int, dim: int) -> torch.Tensor:
        return torch.zeros(self.N, T, dim, dtype=self.dtype, device=self.device)

    def dim(self, d: Descriptor) -> int:
        return descriptor_dim(d, self.m.nnet.node_dim)

    def slice(self, name: str, lo: int, hi: int, step: int) -> torch.Tensor:
        v, start, stride = self.vals[name]
        if start == -INF:
            return v.expand(self.N, _count(lo, hi, step), v.shape[-1])
        last = start + (v.shape[1] - 1) * stride
        if lo < start or hi > last or (lo - start) % stride or step % stride:
            raise RuntimeError(f"internal error: node {name} frames {lo}..{hi} step {step} outside computed "
                               f"{start}..{last} step {stride}")
        a, k = (lo - start) // stride, step // stride
        return v[:, a:(hi - start) // stride + 1:k]

    def defined_range(self, d: Descriptor) -> Range:
        """Frames where `d` exists, from what has been computed (on the grids that are read)."""
        if isinstance(d, NodeRef):
            v, start, stride = self.vals[d.name]
            return (-INF, INF) if start == -INF else (start, start + (v.shape[1] - 1) * stride)
        if isinstance(d, Offset):
            lo, hi = self.defined_range(d.arg)
            return (lo - d.t, hi - d.t)
        if isinstance(d, Round):
            return round_range(self.defined_range(d.arg), d.modulus)
        if isinstance(d, (IfDefined, Const, ReplaceIndex)):
            return (-INF, INF)
        lo, hi = -INF, INF
        for c in d.children():
            a, b = self.defined_range(c)
            lo, hi = max(lo, a), min(hi, b)
        return lo, hi

    def descriptor(self, d: Descriptor, lo: int, hi: int, step: int) -> torch.Tensor:
        """Values of `d` on frames lo, lo + step, ..., hi as (N, frames, dim)."""
        if isinstance(d, NodeRef):
            return self.slice(d.name, lo, hi, step)
        if isinstance(d, Offset):
            return self.descriptor(d.arg, lo + d.t, hi + d.t, step)
        if isinstance(d, Append):
            return torch.cat([self.descriptor(a, lo, hi, step) for a in d.args], dim=-1)
        if isinstance(d, Sum):
            return self.descriptor(d.a, lo, hi, step) + self.descriptor(d.b, lo, hi, step)
        if isinstance(d, Scale):
            return d.scale * self.descriptor(d.arg, lo, hi, step)
        if isinstance(d, Const):
            return torch.full((self.N, _count(lo, hi, step), d.dim), d.value, dtype=self.dtype, device=self.device)
        if isinstance(d, ReplaceIndex):
            return self.descriptor(d.arg, 0, 0, 1).expand(self.N, _count(lo, hi, step), -1)
        if isinstance(d, Round):  # each frame takes the value at the multiple of m at or below it
            m = d.modulus
            if m == 1:
                return self.descriptor(d.arg, lo, hi, step)
            src = self.descriptor(d.arg, lo // m * m, hi // m * m, 1)   # its argument is on stride 1
            return src[:, self._times(lo, hi, step) // m * m - lo // m * m]
        if isinstance(d, IfDefined):
            a, b = self.defined_range(d.arg)
            a = lo if a <= lo else lo + -(-(a - lo) // step) * step
            b = hi if b >= hi else hi - -(-(hi - b) // step) * step
            if a > b:
                return self._zeros(_count(lo, hi, step), self.dim(d.arg))
            inner = self.descriptor(d.arg, a, b, step)
            if a == lo and b == hi:
                return inner
            return torch.cat([self._zeros((a - lo) // step, inner.shape[-1]), inner,
                              self._zeros((hi - b) // step, inner.shape[-1])], dim=1)
        raise NetworkConfigError(f"descriptor {d} is not supported by kaldi-avg")

    def _times(self, lo: int, hi: int, step: int = 1) -> torch.Tensor:
        return torch.arange(lo, hi + 1, step, device=self.device)

    def run_node(self, name: str) -> None:
        node = self.m.nnet.node(name)
        lo, hi = self.need[name]
        step = self.step(name)
        if isinstance(node, DimRangeNode):
            src = self.slice(node.input_node, lo, hi, step)
            self.vals[name] = (src[..., node.dim_offset:node.dim_offset + node.dim], lo, step)
            return
        if not reads_input(self.m.nnet, node):
            # A component that takes no input gets an empty one: only the frames (rows) matter.
            y = self.m.op(node.component)(self._zeros(_count(lo, hi, step), 0), self._times(lo, hi, step))
            self.vals[name] = (y, lo, step)
            return
        d = node_input(self.m.nnet, node)
        if isinstance(node, OutputNode):
            self.vals[name] = (self.descriptor(d, lo, hi, step), lo, step)
            return
        op = self.m.op(node.component)
        if self.m._summarizes_frames(name):
            # It summarizes other frames of its input (4.25): it gets those that exist (stride 1).
            first, last = self.m._input_frames(name, lo, hi)
            a, b = self.defined_range(d)
            first, last = max(first, a), min(last, b)
            y = op(self.descriptor(d, first, last, 1), self._times(first, last), out_times=self._times(lo, hi))
        else:
            y = op(self.descriptor(d, lo, hi, step), self._times(lo, hi, step), first_frame=lo, frame_stride=step)
        self.vals[name] = (y, lo, step)

    # -- recurrent loops ----------------------------------------------------------------
    def run_loop(self, loop: _Loop) -> None:
        members = [m for m in loop.members if self.need[m][0] <= self.need[m][1]]
        if not members:
            return
        if loop.fast is not None and lstm_loop.fits(loop.fast, self.need):
            self.run_fast_lstm(loop)
            return
        inside = set(loop.members)
        steps: dict[str, dict[int, torch.Tensor]] = {m: {} for m in members}  # node -> frame -> (N, dim)
        plans = {m: self._step_plan(m, inside) for m in members}
        lo = min(self.need[m][0] for m in members)
        hi = max(self.need[m][1] for m in members)
        s = self.step(members[0])   # the loop's grid, every member's
        for t in (range(hi, lo - 1, -s) if loop.backward else range(lo, hi + 1, s)):
            with torch.set_grad_enabled(torch.is_grad_enabled() and
                                        self.min_deriv_time <= t <= self.max_deriv_time):
                for m in members:
                    if self.need[m][0] <= t <= self.need[m][1]:
                        steps[m][t] = plans[m](t, steps)
        for m in members:
            first, last = self.need[m]
            self.vals[m] = (torch.stack([steps[m][t] for t in range(first, last + 1, s)], dim=1), first, s)

    def run_fast_lstm(self, loop: _Loop) -> None:
        """A fast LSTM loop (`lstm_loop.fits` the frame plan) as one node, one step per frame of
        its grid."""
        layer = loop.fast
        lo, hi = self.need[layer.nonlin]
        s = self.step(layer.nonlin)
        outside = layer.outside[0] if len(layer.outside) == 1 else Append(layer.outside)
        ext = self.descriptor(outside, lo, hi, s)
        mask = None if layer.mask is None else self.descriptor(layer.mask, lo, hi, s)
        w_op = self.m.op(self.m.nnet.node(layer.w_all).component)
        nl_op = self.m.op(self.m.nnet.node(layer.nonlin).component)
        p_op = self.m.op(self.m.nnet.node(layer.proj).component) if layer.proj else None
        # the steps whose frames lie in [min_deriv_time, max_deriv_time]
        first = -(-(max(lo, self.min_deriv_time) - lo) // s)
        last = (min(hi, self.max_deriv_time) - lo) // s
        grad_frames = range(first, last + 1) if torch.is_grad_enabled() and first <= last else range(0)
        outputs = lstm_loop.run_layer(
            layer, ext, mask, w_op.param("linear_params"), w_op.param("bias_params"), nl_op.param("peepholes"),
            p_op.param("linear_params") if p_op else None, p_op.param("bias_params") if p_op else None,
            self._times(lo, hi, s), self.N, self.m.nnet, grad_frames, w_op.ng_pass, p_op.ng_pass if p_op else None,
            nl_op.add_activation_sums if nl_op.keeps_stats() else None, stride=s)
        scale = self.m.nnet.components[self.m.nnet.node(layer.trunc).component].scale
        for name, value in lstm_loop.member_values(layer, outputs, scale, loop.read_outside).items():
            self.vals[name] = (value, lo, s)

    def _step_plan(self, name: str, inside: set[str]):
        """A function computing node `name` at one frame t -> (N, dim)."""
        node = self.m.nnet.node(name)
        lo, hi = self.need[name]
        s = self.step(name)
        if isinstance(node, DimRangeNode):
            a, b = node.dim_offset, node.dim_offset + node.dim
            src = node.input_node
            if src in inside:
                return lambda t, steps: steps[src][t][:, a:b]
            frames = _per_frame(self.slice(src, lo, hi, s)[..., a:b])
            return lambda t, steps: frames[(t - lo) // s]
        d = node_input(self.m.nnet, node)
        parts = list(d.args) if isinstance(d, Append) else [d]
        is_internal = [any(r in inside for r, *_ in _refs(p)) for p in parts]
        dims = [self.dim(p) for p in parts]
        op = self.m.op(node.component) if isinstance(node, ComponentNode) else None
        ext_parts = [p for p, i in zip(parts, is_internal) if not i]
        ext = self.descriptor(Append(tuple(ext_parts)), lo, hi, s) if ext_parts else None
        ext_frames = _per_frame(ext) if ext is not None else None

        def internal_values(t, steps):
            return [self._step_value(p, t, steps, inside) for p, i in zip(parts, is_internal) if i]

        if op is not None and op.type_name in AFFINE_TYPES + ("LinearComponent",):
            W = op.param("linear_params")
            b = op.param("bias_params") if op.type_name != "LinearComponent" else None
            cols, pos = [], 0
            for d_, i in zip(dims, is_internal):
                cols.append((pos, pos + d_, i))
                pos += d_
            ext_idx = [j for a, b_, i in cols if not i for j in range(a, b_)]
            int_idx = [j for a, b_, i in cols if i for j in range(a, b_)]
            W_int = W[:, int_idx]
            pre = (torch.nn.functional.linear(ext, W[:, ext_idx], b) if ext is not None
                   else (b if b is not None else 0.0))
            ng = op.ng_pass
            # Natural gradient needs each frame's whole input row [ext, internal] in the
            # component's column order: `order` undoes the (ext, internal) concatenation.
            order = torch.argsort(torch.tensor(ext_idx + int_idx, device=self.device)) if ng is not None else None

            pre_frames = _per_frame(pre) if ext is not None else None

            def affine_step(t, steps):
                x = torch.cat(internal_values(t, steps), dim=-1)
                base = pre_frames[(t - lo) // s] if ext is not None else pre
                y = base + torch.nn.functional.linear(x, W_int)
                if ng is not None and y.requires_grad:
                    rows = x if ext is None else torch.cat([ext_frames[(t - lo) // s].detach(), x.detach()], dim=-1)
                    ng.record(rows[:, order], y)
                return y
            return affine_step

        def generic_step(t, steps):
            ints = iter(internal_values(t, steps))
            off, pieces = 0, []
            for d_, i in zip(dims, is_internal):
                if i:
                    pieces.append(next(ints))
                else:
                    pieces.append(ext_frames[(t - lo) // s][:, off:off + d_])
                    off += d_
            x = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
            if op is None:
                return x
            return op(x, torch.tensor([t], device=self.device))
        return generic_step

    def _step_value(self, d: Descriptor, t: int, steps, inside) -> torch.Tensor:
        if isinstance(d, NodeRef):
            if d.name in inside:
                # Stepping in the loop's direction, a frame not computed yet lies beyond the
                # loop's start: undefined there.
                if t in steps.get(d.name, {}):
                    return steps[d.name][t]
                raise _Undefined(d.name)
            v, start, stride = self.vals[d.name]
            if start == -INF:
                return v[:, 0]
            if not start <= t <= start + (v.shape[1] - 1) * stride:
                raise _Undefined(d.name)
            if (t - start) % stride:
                raise RuntimeError(f"internal error: node {d.name} frame {t} is off its grid "
                                   f"{start} + k {stride}")
            return v[:, (t - start) // stride]
        if isinstance(d, Offset):
            return self._step_value(d.arg, t + d.t, steps, inside)
        if isinstance(d, IfDefined):
            try:
                return self._step_value(d.arg, t, steps, inside)
            except _Undefined:
                return torch.zeros(self.N, self.dim(d.arg), dtype=self.dtype, device=self.device)
        if isinstance(d, Append):
            return torch.cat([self._step_value(a, t, steps, inside) for a in d.args], dim=-1)
        if isinstance(d, Sum):
            return (self._step_value(d.a, t, steps, inside)
                    + self._step_value(d.b, t, steps, inside))
        if isinstance(d, Scale):
            return d.scale * self._step_value(d.arg, t, steps, inside)
        if isinstance(d, Const):
            return torch.full((self.N, d.dim), d.value, dtype=self.dtype, device=self.device)
        if isinstance(d, ReplaceIndex):
            return self._step_value(d.arg, 0, steps, inside)
        raise NetworkConfigError(f"descriptor {d} is not supported by kaldi-avg")


class _Undefined(Exception):
    """A value read inside a recurrent loop does not exist at that frame."""
