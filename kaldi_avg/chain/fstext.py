"""The few pieces of Kaldi's `src/fstext` that kaldifst does not expose (docs/chain.md 2.3).

kaldifst (1.7.17) has Kaldi's `ComposeContext`, `TableCompose` (`kaldifst.compose`),
`MinimizeEncoded`, OpenFst's `Reverse`, `RmEpsilon`, `Connect`, `ArcSort`, and kaldi-hmm-gmm has
`GetHTransducer` and `AddSelfLoops`.  Missing, and written here as literally as the C++ so that
the graphs come out arc for arc the same:

* `remove_eps_local`: `fst::RemoveEpsLocal` (src/fstext/remove-eps-local-inl.h);
* `push_special`: `fst::PushSpecial` (src/fstext/push-special.cc);
* `state_sort`: OpenFst's `StateSort` (a renumbering, used by chain-den-graph.cc's
  `SortOnTransitionCount`);
* `project_input`: `fst::Project(PROJECT_INPUT)`;
* `minimize_encoded`: kaldifst's `minimize_encoded` made to number its encoding as OpenFst 1.8
  (Kaldi's) does, and `rm_final_epsilon` (OpenFst's `RmFinalEpsilon`) for its decoding step.

kaldifst has no mutable arc iterator, so these work on `Graph`, a plain copy of a StdArc
VectorFst (start, final weights, arcs per state), converted from and back to kaldifst through
OpenFst's binary format (kaldifst's Python arc iterator is 5x slower on big graphs).  Weights
are TropicalWeight floats: sums are done in float32 (`Times`) or in double and then rounded
(where Kaldi computes in double), as the C++ does.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import tempfile
from dataclasses import dataclass, field

import kaldifst
import numpy as np

log = logging.getLogger(__name__)

F32 = np.float32
INF = math.inf     # TropicalWeight::Zero()
K_DELTA = float(F32(1.0) / F32(1024.0))   # fst::kDelta

Arc = tuple[int, int, float, int]   # (ilabel, olabel, weight, nextstate)


@dataclass
class Graph:
    """A StdArc VectorFst as Python lists (-1: no start state; inf: not final)."""
    start: int = -1
    finals: list[float] = field(default_factory=list)
    arcs: list[list[Arc]] = field(default_factory=list)

    @property
    def num_states(self) -> int:
        return len(self.finals)

    @property
    def num_arcs(self) -> int:
        return sum(len(a) for a in self.arcs)

    def add_state(self) -> int:
        self.finals.append(INF)
        self.arcs.append([])
        return len(self.finals) - 1

    @classmethod
    def from_fst(cls, fst) -> Graph:
        """A copy of a kaldifst StdArc FST (read from its binary form: kaldifst's per-arc
        iterator is too slow for den graphs of 10^5 arcs)."""
        data = _fst_bytes(fst)
        header = _parse_header(data)
        if header is None:   # symbol tables in the file: take the arcs one by one
            return cls._from_fst_by_iterator(fst)
        pos, (start, num_states) = header
        g = cls(start if num_states else -1)
        blocks, counts = [], []
        for _ in range(num_states):
            final, narcs = struct.unpack_from("<fq", data, pos)
            g.finals.append(float(final))
            pos += 12
            blocks.append(data[pos:pos + 16 * narcs])
            counts.append(narcs)
            pos += 16 * narcs
        arcs = np.frombuffer(b"".join(blocks), dtype=_ARC_DTYPE)
        flat = list(zip(arcs["ilabel"].tolist(), arcs["olabel"].tolist(), arcs["weight"].tolist(),
                        arcs["nextstate"].tolist()))
        at = 0
        for narcs in counts:
            g.arcs.append(flat[at:at + narcs])
            at += narcs
        return g

    @classmethod
    def _from_fst_by_iterator(cls, fst) -> Graph:
        g = cls()
        for s in range(fst.num_states):
            g.finals.append(float(fst.final(s).value))
            g.arcs.append([(a.ilabel, a.olabel, float(a.weight.value), a.nextstate)
                           for a in kaldifst.ArcIterator(fst, s)])
        g.start = fst.start if g.finals else -1
        return g

    def to_fst(self) -> kaldifst.StdVectorFst:
        """A kaldifst StdVectorFst (through its binary form), with all its properties computed."""
        flat = [arc for arcs in self.arcs for arc in arcs]
        arcs = np.zeros(len(flat), dtype=_ARC_DTYPE)
        if flat:
            i, o, w, n = zip(*flat)
            arcs["ilabel"], arcs["olabel"], arcs["weight"], arcs["nextstate"] = i, o, w, n
        raw = arcs.tobytes()
        parts = [_header(self.start, self.num_states, len(flat))]
        at = 0
        for final, state_arcs in zip(self.finals, self.arcs):
            parts.append(struct.pack("<fq", final, len(state_arcs)))
            parts.append(raw[16 * at:16 * (at + len(state_arcs))])
            at += len(state_arcs)
        fst = _read_fst_bytes(b"".join(parts))
        fst.properties(K_FST_PROPERTIES, True)   # compute (and store) them all, as add_arc would
        return fst


# The binary VectorFst format (OpenFst vector-fst.h VectorFst::WriteFst, fst.h FstHeader::Write):
# header, then per state: final weight (float32), number of arcs (int64), arcs (16 bytes each).
_ARC_DTYPE = np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"), ("nextstate", "<i4")])
_MAGIC = 2125659606   # fst::kFstMagicNumber
K_FST_PROPERTIES = 0xFFFFFFFF0000  # fst::kFstProperties (binary and trinary properties)
_K_EXPANDED_MUTABLE = 0x3


def _string(text: bytes) -> bytes:
    return struct.pack("<i", len(text)) + text


def _header(start: int, num_states: int, num_arcs: int) -> bytes:
    return (struct.pack("<i", _MAGIC) + _string(b"vector") + _string(b"standard")
            + struct.pack("<iiQqqq", 2, 0, _K_EXPANDED_MUTABLE, start, num_states, num_arcs))


def _parse_header(data: bytes) -> tuple[int, tuple[int, int]] | None:
    """(offset of the first state, (start, number of states)); None if symbol tables follow."""
    if struct.unpack_from("<i", data, 0)[0] != _MAGIC:
        raise ValueError("not a binary OpenFst")
    pos, names = 4, []
    for _ in range(2):
        size = struct.unpack_from("<i", data, pos)[0]
        names.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    _version, flags, _props, start, num_states, _num_arcs = struct.unpack_from("<iiQqqq", data, pos)
    if names != [b"vector", b"standard"]:
        raise ValueError(f"unexpected FST type {names}")
    if flags & 3:   # kHasISymbols, kHasOSymbols
        return None
    return pos + 40, (start, num_states)


def _temp_path() -> str:
    fd, path = tempfile.mkstemp(suffix=".fst")
    os.close(fd)
    return path


def _fst_bytes(fst) -> bytes:
    path = _temp_path()
    try:
        if not fst.write(path):
            raise OSError(f"kaldifst could not write {path}")
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def _read_fst_bytes(data: bytes) -> kaldifst.StdVectorFst:
    path = _temp_path()
    try:
        with open(path, "wb") as f:
            f.write(data)
        fst = kaldifst.StdVectorFst.read(path)
    finally:
        os.unlink(path)
    if fst is None:
        raise OSError("kaldifst could not read back an FST")
    return fst


def times(a: float, b: float) -> float:
    """TropicalWeight Times: float32 addition."""
    return float(F32(a) + F32(b))


def plus(a: float, b: float) -> float:
    """TropicalWeight Plus: the smaller (the first on a tie)."""
    return a if a < b else b


def divide(a: float, b: float) -> float:
    """TropicalWeight Divide (any side): float32 subtraction; Zero / w = Zero."""
    if b == INF:
        return math.nan   # NoWeight
    if a == INF:
        return INF
    return float(F32(a) - F32(b))


def project_input(g: Graph) -> Graph:
    """`fst::Project(fst, PROJECT_INPUT)`: output labels := input labels."""
    return Graph(g.start, list(g.finals), [[(i, i, w, n) for i, _, w, n in arcs] for arcs in g.arcs])


def state_sort(g: Graph, order: list[int]) -> Graph:
    """OpenFst `StateSort(fst, order)`: state s becomes order[s]; arcs keep their order."""
    out = Graph(order[g.start] if g.start >= 0 else -1, [INF] * g.num_states, [[] for _ in g.arcs])
    for s in range(g.num_states):
        out.finals[order[s]] = g.finals[s]
        out.arcs[order[s]] = [(i, o, w, order[n]) for i, o, w, n in g.arcs[s]]
    return out


class _RemoveEpsLocal:
    """`fst::RemoveEpsLocalClass<StdArc>` with `ReweightPlusDefault` (tropical Plus).

    Removes epsilons where that does not enlarge the graph: an arc into a state with one arc in
    and several out (pattern 1; the arc is reweighted to keep the FST stochastic), or into a
    state with one arc (or final-prob) out (pattern 2).  Arcs are "deleted" by pointing them at
    an extra non-coaccessible state that the final Connect removes with them."""

    def __init__(self, g: Graph):
        self.g = g
        self.dead = g.add_state()   # non_coacc_state_
        n = g.num_states
        self.num_in = [0] * n
        self.num_out = [0] * n
        self.num_in[g.start] += 1
        for s in range(n):
            if g.finals[s] != INF:
                self.num_out[s] += 1
            for arc in g.arcs[s]:
                self.num_in[arc[3]] += 1
                self.num_out[s] += 1
        for s in range(n):
            pos = 0
            while pos < len(g.arcs[s]):
                self.remove_eps(s, pos)
                pos += 1

    @staticmethod
    def combine_arcs(a: Arc, b: Arc) -> Arc | None:
        if a[0] != 0 and b[0] != 0:
            return None
        if a[1] != 0 and b[1] != 0:
            return None
        return (a[0] if a[0] != 0 else b[0], a[1] if a[1] != 0 else b[1], times(a[2], b[2]), b[3])

    @staticmethod
    def combine_final(a: Arc, final: float) -> float | None:
        if a[0] != 0 or a[1] != 0:
            return None
        return times(a[2], final)

    def reweight(self, s: int, pos: int, reweight: float) -> None:
        g = self.g
        assert reweight != INF
        i, o, w, nextstate = g.arcs[s][pos]
        assert self.num_in[nextstate] == 1
        g.arcs[s][pos] = (i, o, times(w, reweight), nextstate)
        arcs = g.arcs[nextstate]
        for k, (ni, no, nw, nn) in enumerate(arcs):
            if nn != self.dead:
                arcs[k] = (ni, no, divide(nw, reweight), nn)
        if g.finals[nextstate] != INF:
            g.finals[nextstate] = divide(g.finals[nextstate], reweight)

    def pattern1(self, s: int, pos: int, arc: Arc) -> None:
        g, nextstate = self.g, arc[3]
        total_removed = total_kept = INF
        to_add = []
        arcs = g.arcs[nextstate]
        for k, nextarc in enumerate(arcs):
            if nextarc[3] == self.dead:
                continue
            combined = self.combine_arcs(arc, nextarc)
            if combined is not None:
                total_removed = plus(total_removed, nextarc[2])
                self.num_out[nextstate] -= 1
                self.num_in[nextarc[3]] -= 1
                arcs[k] = nextarc[:3] + (self.dead,)
                to_add.append(combined)
            else:
                total_kept = plus(total_kept, nextarc[2])
        next_final = g.finals[nextstate]
        if next_final != INF:
            new_final = self.combine_final(arc, next_final)
            if new_final is not None:
                total_removed = plus(total_removed, next_final)
                if g.finals[s] == INF:
                    self.num_out[s] += 1
                g.finals[s] = plus(g.finals[s], new_final)
                self.num_out[nextstate] -= 1
                g.finals[nextstate] = INF
            else:
                total_kept = plus(total_kept, next_final)
        if total_removed != INF:
            if total_kept == INF:   # removed everything: remove the arc
                self.num_out[s] -= 1
                self.num_in[nextstate] -= 1
                g.arcs[s][pos] = arc[:3] + (self.dead,)
            else:
                total = plus(total_removed, total_kept)
                self.reweight(s, pos, divide(total_kept, total))
        for combined in to_add:
            self.num_out[s] += 1
            self.num_in[combined[3]] += 1
            g.arcs[s].append(combined)

    def pattern2(self, s: int, pos: int, arc: Arc) -> None:
        g, nextstate = self.g, arc[3]
        can_delete_next = self.num_in[nextstate] == 1
        delete_arc = False
        next_final = g.finals[nextstate]
        if next_final != INF:   # its one way out is the final-prob
            new_final = self.combine_final(arc, next_final)
            if new_final is not None:
                if g.finals[s] == INF:
                    self.num_out[s] += 1
                g.finals[s] = plus(g.finals[s], new_final)
                delete_arc = True
                if can_delete_next:
                    self.num_out[nextstate] -= 1
                    g.finals[nextstate] = INF
        else:
            arcs = g.arcs[nextstate]
            k = 0
            while arcs[k][3] == self.dead:
                k += 1
            nextarc = arcs[k]
            combined = self.combine_arcs(arc, nextarc)
            if combined is not None:
                delete_arc = True
                if can_delete_next:
                    self.num_out[nextstate] -= 1
                    self.num_in[nextarc[3]] -= 1
                    arcs[k] = nextarc[:3] + (self.dead,)
                self.num_out[s] += 1
                self.num_in[combined[3]] += 1
                g.arcs[s].append(combined)
        if delete_arc:
            self.num_out[s] -= 1
            self.num_in[nextstate] -= 1
            g.arcs[s][pos] = arc[:3] + (self.dead,)

    def remove_eps(self, s: int, pos: int) -> None:
        arc = self.g.arcs[s][pos]
        nextstate = arc[3]
        if nextstate == self.dead or nextstate == s:   # deleted arc; self-loops are not handled
            return
        if self.num_in[nextstate] == 1 and self.num_out[nextstate] > 1:
            self.pattern1(s, pos, arc)
        elif self.num_out[nextstate] == 1:
            self.pattern2(s, pos, arc)


def remove_eps_local(g: Graph) -> kaldifst.StdVectorFst:
    """`fst::RemoveEpsLocal`: local epsilon removal that never enlarges the graph; not all
    epsilons go.  Returns the connected result as a kaldifst FST (modifies `g`)."""
    if g.start < 0:
        return g.to_fst()
    _RemoveEpsLocal(g)
    fst = g.to_fst()
    kaldifst.connect(fst)
    return fst


def _expf(x: float) -> float:
    """`kaldi::Exp(float)` (glibc's expf, which evaluates in double and rounds): exp of a
    float, rounded to float."""
    return float(F32(math.exp(x)))


def push_special(g: Graph, delta: float) -> Graph:
    """`fst::PushSpecial(fst, delta)`: reweights so that every state's arcs plus final-prob
    sum to the same value (the top eigenvalue of the transition matrix, the final-probs going
    back to the start state), found by the power method on (P + 0.1 I), at most 200 iterations,
    stopping at the first multiple of 5 where log(max sum / min sum) <= delta.  Returns a new
    Graph (same arcs, new weights)."""
    n = g.num_states
    if n == 0:
        return g
    delta = float(F32(delta))
    init = g.start
    # pred_[t]: (s, prob) for each arc s->t, and (s, final-prob of s) appended to pred_[start]
    pred_t, pred_s, pred_p = [], [], []
    arc_s, arc_t, arc_p = [], [], []
    final_p = np.zeros(n)
    for s in range(n):
        for _, _, w, t in g.arcs[s]:
            p = _expf(-w)
            pred_t.append(t)
            pred_s.append(s)
            pred_p.append(p)
            arc_s.append(s)
            arc_t.append(t)
            arc_p.append(p)
        final = _expf(-g.finals[s]) if g.finals[s] != INF else 0.0
        final_p[s] = final
        if final != 0.0:
            pred_t.append(init)
            pred_s.append(s)
            pred_p.append(final)
    # the power iteration adds pred_[0], pred_[1], ... in turn: order by target, stably
    order_key = np.argsort(np.asarray(pred_t, dtype=np.int64), kind="stable")
    pt = np.asarray(pred_t, dtype=np.int64)[order_key]
    ps = np.asarray(pred_s, dtype=np.int64)[order_key]
    pp = np.asarray(pred_p, dtype=np.float64)[order_key]
    a_s = np.asarray(arc_s, dtype=np.int64)
    a_t = np.asarray(arc_t, dtype=np.int64)
    a_p = np.asarray(arc_p, dtype=np.float64)

    def test_accuracy(occ: np.ndarray) -> float:
        sums = np.zeros(n)
        np.add.at(sums, a_s, a_p * occ[a_t] / occ[a_s])
        np.add.at(sums, np.arange(n), final_p * occ[init] / occ)
        return math.log(float(sums.max()) / float(sums.min()))

    occ = np.full(n, 1.0 / math.sqrt(n))
    for it in range(200):
        new_occ = 0.1 * occ
        np.add.at(new_occ, ps, occ[pt] * pp)
        lam = math.sqrt(float(np.cumsum(new_occ * new_occ)[-1]))
        occ = new_occ * (1.0 / lam)
        if it % 5 == 0 and it > 0 and test_accuracy(occ) <= delta:
            break
    else:
        log.warning("push-special: finished 200 iterations without converging.  Output will be inaccurate.")
    with np.errstate(divide="ignore"):
        pot = -np.log(occ)
    out = Graph(g.start, [INF] * n, [])
    for s in range(n):
        ps_ = pot[s]
        out.arcs.append([(i, o, float(F32(w + pot[t] - ps_)), t) for i, o, w, t in g.arcs[s]])
        out.finals[s] = times(g.finals[s], float(F32(pot[init] - ps_)))
    return out


def rm_final_epsilon(g: Graph) -> kaldifst.StdVectorFst:
    """OpenFst `RmFinalEpsilon`: epsilon arcs into final states with no coaccessible future
    become final weights of their source states; then Connect.  Modifies `g`."""
    n = g.num_states
    preds: list[list[int]] = [[] for _ in range(n)]
    for s, arcs in enumerate(g.arcs):
        for arc in arcs:
            preds[arc[3]].append(s)
    coaccess = [False] * n
    stack = [s for s in range(n) if g.finals[s] != INF]
    for s in stack:
        coaccess[s] = True
    while stack:
        t = stack.pop()
        for s in preds[t]:
            if not coaccess[s]:
                coaccess[s] = True
                stack.append(s)
    finals = {s for s in range(n)
              if g.finals[s] != INF and not any(coaccess[a[3]] for a in g.arcs[s])}
    for s in range(n):
        weight, kept = g.finals[s], []
        for arc in g.arcs[s]:
            if arc[3] in finals and arc[0] == 0 and arc[1] == 0:
                weight = plus(times(g.finals[arc[3]], arc[2]), weight)
            else:
                kept.append(arc)
        if len(kept) < len(g.arcs[s]):
            g.arcs[s] = kept
            g.finals[s] = weight
    fst = g.to_fst()
    kaldifst.connect(fst)
    return fst


def minimize_encoded(fst: kaldifst.StdVectorFst, delta: float) -> kaldifst.StdVectorFst:
    """Kaldi's `MinimizeEncoded` / chain's `MinimizeAcceptorNoPush` (quantize, encode labels and
    weights, `AcceptorMinimize`, decode) as OpenFst 1.8 (Kaldi's) does it, with kaldifst's
    `minimize_encoded`, whose OpenFst (1.7) differs in one point: it encodes a final weight w
    like an epsilon arc of weight w (same code), where 1.8 gives final weights codes of their
    own (`EncodeTable::Encode` with kNoLabel labels).  So real epsilon arcs are relabelled to a
    fresh label around kaldifst's call (the codes then come out as 1.8 numbers them), and put
    back afterwards together with 1.8's decoding step that 1.7 then misses: `RmFinalEpsilon`,
    which also folds real epsilon arcs into final states without a future."""
    g = Graph.from_fst(fst)
    fresh = 1 + max((max(a[0], a[1]) for arcs in g.arcs for a in arcs), default=0)
    g.arcs = [[(fresh, fresh, w, n) if i == 0 and o == 0 else (i, o, w, n) for i, o, w, n in arcs]
              for arcs in g.arcs]
    out = g.to_fst()
    kaldifst.minimize_encoded(out, delta=delta)
    g = Graph.from_fst(out)
    g.arcs = [[(0, 0, w, n) if i == fresh else (i, o, w, n) for i, o, w, n in arcs] for arcs in g.arcs]
    return rm_final_epsilon(g)
