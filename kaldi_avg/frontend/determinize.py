"""Phone-level lattice determinization of training-graph lattices: what gmm-latgen-faster
`--word-determinize=false` writes in Kaldi's steps/align_fmllr_lats.sh.

Kaldi: `src/lat/determinize-lattice-pruned.cc` (`DeterminizeLatticePhonePrunedWrapper`,
`DeterminizeLatticeInsertPhones`, `DeterminizeLatticePhonePrunedFirstPass`,
`DeterminizeLatticeDeletePhones`), `src/fstext/lattice-utils-inl.h` (`ConvertLattice`, which
factors linear chains into CompactLattice arcs), `src/gmmbin/gmm-latgen-faster.cc`.

No maintained pip package exposes lattice determinization: kaldifst's `determinize` and
`determinize_star` take tropical `StdFst`s (no string weights), kaldi-decoder's
`LatticeSimpleDecoder` gives only the raw state-level lattice, and kaldi-hmm-gmm's
`LatticeFasterDecoder` determinizes internally but returns only the best path. So the
determinization is written here, for the acyclic raw lattices a decoder leaves:

1. Invert (words become the acceptor labels, transition-ids go into the weights' strings) and
   prune: arcs and finals on no path within `beam` of the best are dropped (Kaldi prunes with the
   same beam while determinizing).
2. Insert phones (`DeterminizeLatticeInsertPhones`): an arc that leaves a state other than the
   start with a transition-id that starts a phone (HMM state 0, not a self-loop) gets the label
   of that phone, after its word where it has one (an extra arc then).
3. Determinize the acceptor in the CompactLattice semiring (`Plus` keeps the better weight and
   its string): weighted subset construction with epsilon closure, each subset normalized by its
   best weight (costs subtracted) and the longest common prefix of its strings (moved onto the
   arc). A subset is the closure's states that have a labelled arc out or are final (Kaldi's
   "minimal representation"); subsets equal up to `delta` are one state.
4. Delete the phone labels (they become epsilon), move final weights that carry transition-ids
   onto an epsilon arc into a new final state (weight One), and merge each chain of states with
   one arc in and one epsilon arc out, as `ConvertLattice` does; topologically sorted, start
   state 0.

The result keeps, for every distinct sequence of words *and phones* within the beam, its best
path (alignment and costs): the alternatives the chain supervision may use (optional silences,
alternative pronunciations), each at most once. It is equivalent to Kaldi's lattice (same paths,
weights up to float rounding); the state numbering and where a string is split between arcs may
differ, which nothing downstream depends on (lattice-align-phones re-splits at phone boundaries).
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..chain.phone_lattice import connect
from ..kaldi.lattice import ONE, CompactLattice, Weight, compare, plus, times
from ..kaldi.transition import TransitionModel


class DeterminizeError(ValueError):
    """A raw lattice that cannot be determinized (cyclic, empty, no final state)."""


@dataclass
class RawLattice:
    """A state-level lattice (kaldifst.Lattice: ilabel transition-id, olabel word, weight graph
    and acoustic cost): per state its arcs (tid, word, graph, acoustic, next state)."""
    start: int = -1
    arcs: list[list[tuple[int, int, float, float, int]]] = field(default_factory=list)
    finals: dict[int, tuple[float, float]] = field(default_factory=dict)

    @property
    def num_states(self) -> int:
        return len(self.arcs)

    def _grow(self, s: int) -> None:
        while s >= len(self.arcs):
            self.arcs.append([])

    @classmethod
    def from_text(cls, text: str) -> RawLattice:
        """kaldifst's `Lattice.to_str()`: `src dst ilabel olabel [g,a]` arcs, `state [g,a]`
        finals; the first line's source is the start state."""
        lat = cls()
        for line in text.splitlines():
            col = line.split()
            if not col:
                continue
            s = int(col[0])
            lat._grow(s)
            if lat.start < 0:
                lat.start = s
            if len(col) in (1, 2):
                g, a = (map(float, col[1].split(","))) if len(col) == 2 else (0.0, 0.0)
                lat.finals[s] = (g, a)
            elif len(col) in (4, 5):
                d = int(col[1])
                lat._grow(d)
                g, a = (map(float, col[4].split(","))) if len(col) == 5 else (0.0, 0.0)
                lat.arcs[s].append((int(col[2]), int(col[3]), g, a, d))
            else:
                raise DeterminizeError(f"bad lattice line {line!r}")
        return lat


def _topological_order(num_states: int, succ: Sequence[Sequence[int]]) -> list[int]:
    indeg = [0] * num_states
    for ds in succ:
        for d in ds:
            indeg[d] += 1
    queue = [s for s in range(num_states) if indeg[s] == 0]
    order = []
    while queue:
        s = queue.pop()
        order.append(s)
        for d in succ[s]:
            indeg[d] -= 1
            if indeg[d] == 0:
                queue.append(d)
    if len(order) != num_states:
        raise DeterminizeError("the lattice has a cycle (an epsilon loop in the graph?)")
    return order


def _prune(lat: RawLattice, beam: float) -> RawLattice:
    """The arcs and finals on some path whose cost (graph + acoustic) is within `beam` of the best."""
    n = lat.num_states
    order = _topological_order(n, [[a[4] for a in arcs] for arcs in lat.arcs])
    inf = math.inf
    alpha = [inf] * n
    alpha[lat.start] = 0.0
    for s in order:
        if alpha[s] < inf:
            for _, _, g, a, d in lat.arcs[s]:
                alpha[d] = min(alpha[d], alpha[s] + g + a)
    beta = [inf] * n
    for s, (g, a) in lat.finals.items():
        beta[s] = g + a
    for s in reversed(order):
        for _, _, g, a, d in lat.arcs[s]:
            beta[s] = min(beta[s], g + a + beta[d])
    best = beta[lat.start]
    if best == inf:
        raise DeterminizeError("no final state is reachable in the lattice")
    limit = best + beam
    out = RawLattice(lat.start, [[] for _ in range(n)], {})
    for s in range(n):
        if alpha[s] == inf:
            continue
        out.arcs[s] = [arc for arc in lat.arcs[s] if alpha[s] + arc[2] + arc[3] + beta[arc[4]] <= limit]
        if s in lat.finals and alpha[s] + sum(lat.finals[s]) <= limit:
            out.finals[s] = lat.finals[s]
    return out


@dataclass
class _Acceptor:
    """The inverted lattice with phones inserted: arcs (label, weight, next state); label 0 is
    epsilon, words are positive, a phone p is -p; `order[s]` is s's place in a topological order."""
    start: int
    arcs: list[list[tuple[int, Weight, int]]]
    finals: dict[int, Weight]
    order: list[int]


def _insert_phones(lat: RawLattice, trans_model: TransitionModel) -> _Acceptor:
    phones = trans_model.transition_id_phones()
    hmm_states = trans_model.transition_id_hmm_states()
    self_loops = trans_model.self_loop_mask()
    n = lat.num_states
    arcs: list[list[tuple[int, Weight, int]]] = [[] for _ in range(n)]
    for s in range(n):
        for tid, word, g, a, d in lat.arcs[s]:
            w: Weight = (g, a, (tid,) if tid else ())
            start_of_phone = (s != lat.start and tid != 0 and hmm_states[tid] == 0 and not self_loops[tid])
            if not start_of_phone:
                arcs[s].append((word, w, d))
            elif word == 0:
                arcs[s].append((-int(phones[tid]), w, d))
            else:
                extra = len(arcs)
                arcs.append([(-int(phones[tid]), ONE, d)])
                arcs[s].append((word, w, extra))
    order = _topological_order(len(arcs), [[a[2] for a in state_arcs] for state_arcs in arcs])
    rank = [0] * len(arcs)
    for i, s in enumerate(order):
        rank[s] = i
    finals = {s: (g, a, ()) for s, (g, a) in lat.finals.items()}
    return _Acceptor(lat.start, arcs, finals, rank)


def _closure(acc: _Acceptor, subset: dict[int, Weight]) -> dict[int, Weight]:
    """The epsilon closure: each state reachable by epsilon arcs with its best weight (states
    are expanded in topological order, so every weight is complete when it is expanded)."""
    out = dict(subset)
    heap = [(acc.order[s], s) for s in out]
    heapq.heapify(heap)
    queued = set(out)
    while heap:
        _, s = heapq.heappop(heap)
        w = out[s]
        for label, aw, d in acc.arcs[s]:
            if label == 0:
                out[d] = plus(out.get(d), times(w, aw))
                if d not in queued:
                    queued.add(d)
                    heapq.heappush(heap, (acc.order[d], d))
    return out


def _normalize(subset: dict[int, Weight], delta: float) -> tuple[Weight, tuple, dict[int, Weight]]:
    """(the common weight: best costs and the strings' common prefix, the key, the residuals)."""
    best = None
    for w in subset.values():
        if best is None or compare(w, best) > 0:
            best = w
    strings = [w[2] for w in subset.values()]
    prefix = 0
    shortest = min(len(s) for s in strings)
    while prefix < shortest and all(s[prefix] == strings[0][prefix] for s in strings):
        prefix += 1
    g0, a0 = best[0], best[1]
    residual = {s: (w[0] - g0, w[1] - a0, w[2][prefix:]) for s, w in subset.items()}
    key = tuple(sorted((s, round(w[0] / delta), round(w[1] / delta), w[2]) for s, w in residual.items()))
    return (g0, a0, strings[0][:prefix]), key, residual


def _end_states(acc: _Acceptor, closed: dict[int, Weight]) -> dict[int, Weight]:
    return {s: w for s, w in closed.items() if s in acc.finals or any(a[0] != 0 for a in acc.arcs[s])}


def _determinize(acc: _Acceptor, delta: float) -> CompactLattice:
    """The subset construction (labels: words, phones as -p; states in creation order)."""
    out = CompactLattice()
    subsets: list[dict[int, Weight]] = []
    ids: dict[tuple, int] = {}
    start = _end_states(acc, _closure(acc, {acc.start: ONE}))
    if not start:
        raise DeterminizeError("the lattice's start state reaches no labelled arc or final state")
    out.start = out.add_state()
    subsets.append(start)
    queue = 0
    while queue < len(subsets):
        sid = queue
        queue += 1
        subset = subsets[sid]
        final = None
        by_label: dict[int, dict[int, Weight]] = {}
        for s, w in subset.items():
            if s in acc.finals:
                final = plus(final, times(w, acc.finals[s]))
            for label, aw, d in acc.arcs[s]:
                if label != 0:
                    targets = by_label.setdefault(label, {})
                    targets[d] = plus(targets.get(d), times(w, aw))
        out.finals[sid] = final
        for label in sorted(by_label, key=lambda x: (x < 0, abs(x))):
            closed = _end_states(acc, _closure(acc, by_label[label]))
            if not closed:
                continue
            common, key, residual = _normalize(closed, delta)
            dest = ids.get(key)
            if dest is None:
                dest = ids[key] = out.add_state()
                subsets.append(residual)
            out.add_arc(sid, (label, common, dest))
    return out


def _merge_chains(lat: CompactLattice) -> None:
    """`ConvertLattice`'s factoring: a state (not start, not final) with one arc in and one
    epsilon arc out is bypassed, its two arcs becoming one (costs added, strings joined)."""
    changed = True
    while changed:
        changed = False
        incoming: list[list[tuple[int, int]]] = [[] for _ in range(lat.num_states)]
        for s, arcs in enumerate(lat.arcs):
            for i, (_, _, d) in enumerate(arcs):
                incoming[d].append((s, i))
        for s in range(lat.num_states):
            if (s == lat.start or lat.finals[s] is not None or len(incoming[s]) != 1
                    or len(lat.arcs[s]) != 1 or lat.arcs[s][0][0] != 0):
                continue
            p, i = incoming[s][0]
            if p == s or i >= len(lat.arcs[p]) or lat.arcs[p][i][2] != s:
                continue          # stale after a merge in this pass: the next pass sees it
            label, w, _ = lat.arcs[p][i]
            _, w2, d = lat.arcs[s][0]
            lat.arcs[p][i] = (label, times(w, w2), d)
            lat.arcs[s] = []
            changed = True
        if changed:
            connect(lat)


def _final_strings_to_arcs(lat: CompactLattice) -> None:
    """A final weight with transition-ids becomes an epsilon arc with that weight into a new
    final state of weight One (as Kaldi's lattices come out of `ConvertLattice`: no final
    weight carries a string)."""
    for s in range(lat.num_states):
        fw = lat.finals[s]
        if fw is not None and fw[2]:
            f = lat.add_state()
            lat.finals[f] = ONE
            lat.add_arc(s, (0, fw, f))
            lat.finals[s] = None


def _renumber_topologically(lat: CompactLattice) -> CompactLattice:
    """States renumbered in a topological order that starts with the start state (0), arcs kept
    in their order."""
    order = _topological_order(lat.num_states, [[a[2] for a in arcs] for arcs in lat.arcs])
    if order[0] != lat.start:
        order.remove(lat.start)
        order.insert(0, lat.start)
    new = {s: i for i, s in enumerate(order)}
    out = CompactLattice(start=0)
    for _ in order:
        out.add_state()
    for s in order:
        out.arcs[new[s]] = [(label, w, new[d]) for label, w, d in lat.arcs[s]]
        out.finals[new[s]] = lat.finals[s]
    out.top_sorted_known = out.is_top_sorted()
    return out


def determinize_lattice_phone(raw: RawLattice, trans_model: TransitionModel, beam: float,
                              delta: float = 1.0 / 1024) -> CompactLattice:
    """`DeterminizeLatticePhonePrunedWrapper` with `--word-determinize=false` (module docstring):
    the CompactLattice of the raw lattice's best path for each word-and-phone sequence within
    `beam`; weights as in `raw` (scale them afterwards, as gmm-latgen-faster does)."""
    if raw.start < 0 or not raw.num_states:
        raise DeterminizeError("empty lattice")
    acc = _insert_phones(_prune(raw, beam), trans_model)
    lat = _determinize(acc, delta)
    for s, arcs in enumerate(lat.arcs):
        lat.arcs[s] = [(label if label > 0 else 0, w, d) for label, w, d in arcs]
    connect(lat)
    _final_strings_to_arcs(lat)
    _merge_chains(lat)
    return _renumber_topologically(lat)


def scale_acoustic(lat: CompactLattice, scale: float) -> None:
    """`ScaleLattice(AcousticLatticeScale(scale))` on every arc and final weight."""
    def f(w: Weight | None) -> Weight | None:
        return None if w is None else (w[0], w[1] * scale, w[2])
    for s, arcs in enumerate(lat.arcs):
        lat.arcs[s] = [(label, f(w), d) for label, w, d in arcs]
    lat.finals = [f(w) for w in lat.finals]


def best_path(lat: CompactLattice, acoustic_scale: float = 1.0) -> tuple[list[int], list[int], Weight]:
    """`lattice-best-path --acoustic-scale`: (transition-ids, words, unscaled weight) of the path
    with the least graph + acoustic_scale * acoustic cost (the lattice must be topologically sorted)."""
    inf = math.inf
    n = lat.num_states
    cost = [inf] * n
    back: list[tuple[int, int] | None] = [None] * n
    cost[lat.start] = 0.0
    for s in range(n):
        if cost[s] == inf:
            continue
        for i, (_, w, d) in enumerate(lat.arcs[s]):
            c = cost[s] + w[0] + acoustic_scale * w[1]
            if c < cost[d]:
                cost[d], back[d] = c, (s, i)
    end, end_cost = -1, inf
    for s in range(n):
        fw = lat.finals[s]
        if fw is not None and cost[s] < inf:
            c = cost[s] + fw[0] + acoustic_scale * fw[1]
            if c < end_cost:
                end, end_cost = s, c
    if end < 0:
        raise DeterminizeError("the lattice has no successful path")
    path = []
    s = end
    while back[s] is not None:
        p, i = back[s]
        path.append(lat.arcs[p][i])
        s = p
    path.reverse()
    total: Weight = ONE
    words = []
    for label, w, _ in path:
        total = times(total, w)
        if label:
            words.append(label)
    total = times(total, lat.finals[end])
    return list(total[2]), words, total


__all__ = ["DeterminizeError", "RawLattice", "best_path", "determinize_lattice_phone", "scale_acoustic"]
