"""Kaldi's chain `Supervision` (src/chain/chain-supervision.{h,cc}): its text form and the
per-sequence FSTs the numerator runs on (docs/chain.md 5.1).

`Supervision::Write` in text mode writes

    <key> <Supervision> <Weight> w <NumSequences> n <FramesPerSeq> f <LabelDim> d <End2End> F
    <the FST as fstprint prints it: "src dst ilabel olabel [weight]" arcs, "state [weight]" finals>
    <an empty line>
    [<AlignmentPdfs> [ ... ]] </Supervision>

with the next key on the same line as `</Supervision>` in a text archive. The FST is an
epsilon-free acceptor whose labels are pdf-id + 1 and whose states are numbered in order of time
(`ComputeFstStateTimes`: the start state 0 is at frame 0, every arc goes from frame t to t+1, and
all final states are at frame n * f). With n > 1 sequences (`MergeSupervision`) the FST is the
concatenation of the sequences' FSTs with the epsilons removed: a state at a sequence boundary
carries the next sequence's first arcs, their weights plus its own final weight. `Supervision`
here keeps one FST per sequence instead (what the numerator batches over); `split_merged_fst`
undoes the concatenation (exactly: the boundary states' arcs must be the next sequence's first arcs
up to one additive weight per state, which is what RmEpsilon leaves; each becomes that final
weight). End-to-end supervisions (<End2End> T) and the binary form are not read.

`supervision_text` / `write_supervisions` write the text form (`ark,t:`) as Kaldi does: for the
FSDD fixture's 20 supervisions the archive read and written again is Kaldi's file byte for byte;
several sequences are written as `MergeSupervision`'s one FST (`merged_fst`).
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

JUNCTION_TOLERANCE = 1e-3    # float weights: boundary arcs agree to rounding


@dataclass
class SupervisionFst:
    """An acceptor with start state 0: arcs src -> dst with `label` (pdf-id + 1) and tropical
    `weight`; `final` the final weight per state (inf: not final)."""
    num_states: int
    src: np.ndarray
    dst: np.ndarray
    label: np.ndarray
    weight: np.ndarray
    final: np.ndarray

    @property
    def num_arcs(self) -> int:
        return int(self.src.size)

    def state_times(self) -> np.ndarray:
        return state_times(self)


@dataclass
class Supervision:
    """Kaldi's `Supervision` (non-end-to-end) with one FST per sequence."""
    weight: float
    frames_per_sequence: int
    label_dim: int
    fsts: list[SupervisionFst] = field(default_factory=list)

    @property
    def num_sequences(self) -> int:
        return len(self.fsts)


def state_times(fst: SupervisionFst) -> np.ndarray:
    """`ComputeFstStateTimes`: each state's frame, checking that states are numbered in order of
    time, every arc advances one frame, labels are not epsilon and final states share one frame
    (the sequence length, `times.max()`)."""
    return batched_state_times(fst.num_states, fst.src, fst.dst, fst.label, fst.final, np.array([0]))


def batched_state_times(num_states: int, src: np.ndarray, dst: np.ndarray, label: np.ndarray, final: np.ndarray,
                        starts: np.ndarray) -> np.ndarray:
    """`state_times` of several FSTs laid end to end (state numbers offset; `starts` the first
    state of each), level by level from the start states, vectorised over the FSTs."""
    if src.size and label.min() <= 0:
        raise ValueError("supervision FST has an epsilon arc")
    times = np.full(num_states, -1, dtype=np.int64)
    times[starts] = 0
    frontier = np.zeros(num_states, dtype=bool)
    frontier[starts] = True
    t = 0
    while True:
        d = dst[frontier[src]]
        if d.size == 0:
            break
        if np.any((times[d] != -1) & (times[d] != t + 1)):
            raise ValueError("supervision FST: arcs into a state come from different frames")
        times[d] = t + 1
        frontier[:] = False
        frontier[d] = True
        t += 1
    if np.any(times < 0):
        raise ValueError(f"supervision FST: state {int(np.flatnonzero(times < 0)[0])} is not reached from the start")
    if np.any(times[dst] != times[src] + 1):
        raise ValueError("supervision FST: an arc does not advance one frame")
    seg = np.zeros(num_states, dtype=bool)
    seg[starts] = True
    if np.any((np.diff(times) < 0) & ~seg[1:]):
        raise ValueError("supervision FST: states are not numbered in order of time")
    fst_of = np.cumsum(seg) - 1
    is_final = np.isfinite(final)
    last = np.full(len(starts), -1)
    np.maximum.at(last, fst_of[is_final], times[is_final])
    first = np.full(len(starts), np.iinfo(np.int64).max)
    np.minimum.at(first, fst_of[is_final], times[is_final])
    if np.any(last < 0):
        raise ValueError("supervision FST has no final state")
    if np.any(first != last):
        raise ValueError("supervision FST: final states at different frames")
    return times


def _subfst(fst: SupervisionFst, times: np.ndarray, t0: int, t1: int, arc_mask: np.ndarray,
            start_arcs: tuple | None, final: dict[int, float]) -> SupervisionFst:
    """States of frames t0..t1 renumbered from 0 (a new start state when `start_arcs` replaces the
    boundary states' arcs), arcs of `arc_mask`, final weights `final` (old state -> weight)."""
    old_states = np.flatnonzero((times >= t0) & (times <= t1))
    if start_arcs is not None:
        old_states = old_states[times[old_states] > t0]
    offset = 1 if start_arcs is not None else 0
    new = np.full(fst.num_states, -1, dtype=np.int64)
    new[old_states] = np.arange(offset, offset + len(old_states))
    src, dst = new[fst.src[arc_mask]], new[fst.dst[arc_mask]]
    label, weight = fst.label[arc_mask], fst.weight[arc_mask]
    if start_arcs is not None:
        s_dst, s_label, s_weight = start_arcs
        src = np.concatenate([np.zeros(len(s_dst), np.int64), src])
        dst = np.concatenate([new[s_dst], dst])
        label = np.concatenate([s_label, label])
        weight = np.concatenate([s_weight, weight])
    fin = np.full(offset + len(old_states), np.inf, dtype=np.float32)
    for s, w in final.items():
        fin[new[s]] = w
    order = np.argsort(src, kind="stable")
    return SupervisionFst(offset + len(old_states), src[order], dst[order], label[order], weight[order], fin)


def split_merged_fst(fst: SupervisionFst, num_sequences: int, frames_per_sequence: int) -> list[SupervisionFst]:
    """The per-sequence FSTs of a merged supervision FST (see the module docstring)."""
    times = state_times(fst)
    if times.max() != num_sequences * frames_per_sequence:
        raise ValueError(f"supervision FST spans {times.max()} frames, expected {num_sequences} x "
                         f"{frames_per_sequence}")
    if num_sequences == 1:
        return [fst]
    arc_time = times[fst.src]
    out = []
    start_arcs = None
    for k in range(num_sequences):
        t0, t1 = k * frames_per_sequence, (k + 1) * frames_per_sequence
        if k == num_sequences - 1:
            final = {int(s): float(fst.final[s]) for s in np.flatnonzero(times == t1)}
            mask = (arc_time >= t0) & (arc_time < t1)
            if start_arcs is not None:
                mask &= arc_time > t0
            out.append(_subfst(fst, times, t0, t1, mask, start_arcs, final))
            break
        # the boundary states at t1: their arcs are the next sequence's first arcs + c(q)
        boundary = np.flatnonzero(times == t1)
        keyed = []
        for q in boundary:
            sel = np.flatnonzero(fst.src == q)
            o = np.lexsort((fst.dst[sel], fst.label[sel]))
            keyed.append(sel[o])
        ref = keyed[0]
        final = {}
        for q, sel in zip(boundary, keyed):
            if (len(sel) != len(ref) or np.any(fst.label[sel] != fst.label[ref])
                    or np.any(fst.dst[sel] != fst.dst[ref])):
                raise ValueError(f"merged supervision: the states at frame {t1} do not share the next "
                                 "sequence's first arcs")
            diff = fst.weight[sel].astype(np.float64) - fst.weight[ref]
            if diff.size and np.ptp(diff) > JUNCTION_TOLERANCE:
                raise ValueError(f"merged supervision: the arcs of state {q} at frame {t1} differ from the "
                                 "next sequence's first arcs by more than one weight")
            final[int(q)] = float(diff.mean()) if diff.size else 0.0
        mask = (arc_time >= t0) & (arc_time < t1)
        if start_arcs is not None:
            mask &= arc_time > t0
        out.append(_subfst(fst, times, t0, t1, mask, start_arcs, final))
        start_arcs = (fst.dst[ref], fst.label[ref], fst.weight[ref])
    return out


def merge_supervisions(sups: Sequence[Supervision]) -> Supervision:
    """`MergeSupervision`: one supervision of all the sequences (equal weights, lengths and label
    dims, as Kaldi requires)."""
    if not sups:
        raise ValueError("nothing to merge")
    first = sups[0]
    for s in sups[1:]:
        if (s.weight, s.frames_per_sequence, s.label_dim) != (first.weight, first.frames_per_sequence,
                                                               first.label_dim):
            raise ValueError("Mismatch weight or frames_per_sequence between inputs")
    return Supervision(first.weight, first.frames_per_sequence, first.label_dim,
                       [f for s in sups for f in s.fsts])


# -- the text form -------------------------------------------------------------------------------
_TOKEN = re.compile(r"\S+")


def parse_fst_text(lines: Sequence[str]) -> SupervisionFst:
    """An FST as fstprint writes it (Kaldi's text FSTs): the first arc's source is the start."""
    src, dst, label, weight, finals = [], [], [], [], {}
    start = None
    for line in lines:
        f = line.split()
        if len(f) in (4, 5):
            s, d, il, ol = (int(v) for v in f[:4])
            if il != ol:
                raise ValueError(f"supervision FST is not an acceptor: {line.strip()!r}")
            src.append(s)
            dst.append(d)
            label.append(il)
            weight.append(float(f[4]) if len(f) == 5 else 0.0)
            start = s if start is None else start
        elif len(f) in (1, 2):
            finals[int(f[0])] = float(f[1]) if len(f) == 2 else 0.0
            start = int(f[0]) if start is None else start
        else:
            raise ValueError(f"bad FST line {line.strip()!r}")
    if start not in (0, None):
        raise ValueError(f"supervision FST starts in state {start}; Kaldi expects 0")
    n = max([0, *src, *dst, *finals]) + 1 if (src or finals) else 0
    final = np.full(n, np.inf, dtype=np.float32)
    for s, w in finals.items():
        final[s] = w
    as_i = lambda a: np.asarray(a, dtype=np.int64)
    return SupervisionFst(n, as_i(src), as_i(dst), as_i(label), np.asarray(weight, dtype=np.float32), final)


def parse_supervision_text(text: str) -> Iterator[tuple[str, Supervision]]:
    """(key, Supervision) for each entry of a text archive of `Supervision`s."""
    pos = 0

    def token() -> str:
        nonlocal pos
        m = _TOKEN.search(text, pos)
        if m is None:
            raise ValueError("supervision archive ends in the middle of an entry")
        pos = m.end()
        return m.group()

    def expect(tok: str) -> None:
        got = token()
        if got != tok:
            raise ValueError(f"expected {tok} in supervision archive, got {got!r}")

    while _TOKEN.search(text, pos):
        key = token()
        if key.startswith("\0B") or "\0" in key:
            raise ValueError("binary supervision archives are not read; write them with ark,t:")
        expect("<Supervision>")
        expect("<Weight>")
        weight = float(token())
        expect("<NumSequences>")
        num_sequences = int(token())
        expect("<FramesPerSeq>")
        frames = int(token())
        expect("<LabelDim>")
        label_dim = int(token())
        expect("<End2End>")
        if token() != "F":
            raise ValueError(f"{key}: end-to-end supervision is not supported")
        # the FST: from the next line up to an empty line
        nl = text.index("\n", pos)
        end = text.find("\n\n", nl)
        if end < 0:
            raise ValueError(f"{key}: supervision FST is not terminated by an empty line")
        fst = parse_fst_text([ln for ln in text[nl + 1:end].split("\n") if ln.strip()])
        pos = end + 2
        tok = token()
        if tok == "<AlignmentPdfs>":
            expect("[")
            while token() != "]":
                pass
            tok = token()
        if tok != "</Supervision>":
            raise ValueError(f"{key}: expected </Supervision>, got {tok!r}")
        fsts = split_merged_fst(fst, num_sequences, frames)
        yield key, Supervision(weight, frames, label_dim, fsts)


def read_supervisions(path: str | Path) -> Iterator[tuple[str, Supervision]]:
    """A text archive of supervisions (`chain-get-supervision ... ark,t:file`)."""
    yield from parse_supervision_text(Path(path).read_text())


def _format_float(x: float, precision: int) -> str:
    """C++ `ostream << float` with `precision` digits (%g), OpenFst's spelling of infinities."""
    if x == np.inf:
        return "Infinity"
    if x == -np.inf:
        return "-Infinity"
    if x != x:
        return "BadNumber"
    return f"{x:.{precision}g}"


def fst_text(fst: SupervisionFst, precision: int = 6) -> str:
    """The FST as Kaldi's text `WriteFstKaldi` prints it (OpenFst's FstPrinter, tab-separated):
    for each state from the start (0), its arcs `src dst label label [weight]`, then
    `state [weight]` if it is final; weights equal to One (0) are left out."""
    order = np.argsort(fst.src, kind="stable")
    src, dst = fst.src[order].tolist(), fst.dst[order].tolist()
    label, weight = fst.label[order].tolist(), fst.weight[order].tolist()
    starts = np.searchsorted(fst.src[order], np.arange(fst.num_states + 1)).tolist()
    final = fst.final.tolist()
    out = []
    for s in range(fst.num_states):
        for k in range(starts[s], starts[s + 1]):
            w = weight[k]
            out.append(f"{src[k]}\t{dst[k]}\t{label[k]}\t{label[k]}"
                       + (f"\t{_format_float(w, precision)}\n" if w != 0.0 else "\n"))
        f = final[s]
        if f != np.inf:
            out.append(f"{s}\t{_format_float(f, precision)}\n" if f != 0.0 else f"{s}\n")
    return "".join(out)


def merged_fst(sup: Supervision) -> SupervisionFst:
    """The FST of `MergeSupervision` for a supervision of several sequences, built as Kaldi builds
    it: starting from the last sequence, `Concat(fst_k, &out)` for k = n-2 .. 0 (OpenFst puts
    fst_k's states after out's, its final states get an epsilon arc, carrying the final weight,
    to out's start, listed before their own arcs), then `RmEpsilon` (which also drops the
    unreachable old starts) and `SortBreadthFirstSearch`. `split_merged_fst` undoes it (the
    per-sequence FSTs come back with the same paths and weights; RmEpsilon may reorder arcs, so
    not necessarily with the same state numbers). One sequence: its FST as it is."""
    if sup.num_sequences == 1:
        return sup.fsts[0]
    import kaldifst
    n = sup.num_sequences
    offset = [0] * n            # sequence k's states come after those of k+1 .. n-1
    for k in range(n - 2, -1, -1):
        offset[k] = offset[k + 1] + sup.fsts[k + 1].num_states
    out = kaldifst.StdVectorFst()
    for _ in range(offset[0] + sup.fsts[0].num_states):
        out.add_state()
    for k in range(n - 1, -1, -1):
        fst, o = sup.fsts[k], offset[k]
        order = np.argsort(fst.src, kind="stable")
        starts = np.searchsorted(fst.src[order], np.arange(fst.num_states + 1)).tolist()
        dst, label, weight = fst.dst[order].tolist(), fst.label[order].tolist(), fst.weight[order].tolist()
        for s in range(fst.num_states):
            final = float(fst.final[s])
            if np.isfinite(final):
                if k == n - 1:
                    out.set_final(o + s, final)
                else:
                    out.add_arc(o + s, kaldifst.StdArc(0, 0, final, offset[k + 1]))
            for j in range(starts[s], starts[s + 1]):
                out.add_arc(o + s, kaldifst.StdArc(label[j], label[j], weight[j], o + dst[j]))
    out.start = offset[0]
    kaldifst.rmepsilon(out)
    return from_kaldifst(out)


def supervision_text(key: str, sup: Supervision, precision: int = 6) -> str:
    """One entry of a text archive of `Supervision`s, as Kaldi's `Supervision::Write` in text mode
    after the table writer's `<key> `: the header tokens, the FST (`fst_text`; the merged FST for
    several sequences) between a newline and an empty line, `</Supervision> ` (no alignment
    pdfs: chain-get-supervision writes none). `precision` = 6 is Kaldi's (C++ streams' default);
    9 reads back every float32 weight exactly."""
    if not sup.fsts:
        raise ValueError(f"{key}: supervision without sequences")
    if any(c.isspace() for c in key) or not key:
        raise ValueError(f"invalid key {key!r} for a Kaldi archive")
    return (f"{key} <Supervision> <Weight> {_format_float(float(np.float32(sup.weight)), precision)} "
            f"<NumSequences> {sup.num_sequences} <FramesPerSeq> {sup.frames_per_sequence} "
            f"<LabelDim> {sup.label_dim} <End2End> F \n{fst_text(merged_fst(sup), precision)}\n</Supervision> ")


def write_supervisions(path: str | Path, items, precision: int = 6) -> int:
    """A text archive of (key, Supervision) pairs (`ark,t:`), written atomically; returns the
    number of entries. Kaldi's text archive has no newline after the last `</Supervision> `."""
    from ..atomic import atomic_path
    n = 0
    with atomic_path(str(path)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for key, sup in items:
            f.write(supervision_text(key, sup, precision))
            n += 1
    return n


# -- kaldifst conversion, and the normalization FST (nnet3-chain-get-egs) ---------------------------
def sort_breadth_first(fst: SupervisionFst) -> SupervisionFst:
    """`SortBreadthFirstSearch`: states renumbered in breadth-first order from the start (time
    order for a supervision FST)."""
    order = np.argsort(fst.src, kind="stable")
    src, dst = fst.src[order], fst.dst[order]
    starts = np.searchsorted(src, np.arange(fst.num_states + 1))
    new = np.full(fst.num_states, -1, dtype=np.int64)
    new[0] = 0
    queue, n = [0], 1
    for state in queue:
        for d in dst[starts[state]:starts[state + 1]]:
            if new[d] < 0:
                new[d] = n
                n += 1
                queue.append(int(d))
    if n != fst.num_states:
        raise ValueError("Input to SortBreadthFirstSearch must be connected.")
    final = np.empty_like(fst.final)
    final[new] = fst.final
    s2, d2 = new[fst.src], new[fst.dst]
    o = np.argsort(s2, kind="stable")
    return SupervisionFst(fst.num_states, s2[o], d2[o], fst.label[o], fst.weight[o], final)


def to_kaldifst(fst: SupervisionFst):
    import kaldifst
    out = kaldifst.StdVectorFst()
    for _ in range(fst.num_states):
        out.add_state()
    out.start = 0
    for s, d, lab, w in zip(fst.src.tolist(), fst.dst.tolist(), fst.label.tolist(), fst.weight.tolist()):
        out.add_arc(s, kaldifst.StdArc(lab, lab, w, d))
    for s in np.flatnonzero(np.isfinite(fst.final)).tolist():
        out.set_final(s, float(fst.final[s]))
    return out


def from_kaldifst(kfst) -> SupervisionFst:
    """An epsilon-free acceptor with its start renumbered 0, states in breadth-first order."""
    import kaldifst
    n = kfst.num_states
    src, dst, label, weight = [], [], [], []
    final = np.full(n, np.inf, dtype=np.float32)
    for s in range(n):
        for a in kaldifst.ArcIterator(kfst, s):
            if a.ilabel != a.olabel:
                raise ValueError("not an acceptor")
            src.append(s)
            dst.append(a.nextstate)
            label.append(a.ilabel)
            weight.append(a.weight.value)
        final[s] = kfst.final(s).value
    perm = np.arange(n)
    perm[[0, kfst.start]] = perm[[kfst.start, 0]]        # start first; the BFS sort does the rest
    as_i = lambda a: perm[np.asarray(a, dtype=np.int64)]
    f = SupervisionFst(n, as_i(src), as_i(dst), np.asarray(label, np.int64), np.asarray(weight, np.float32),
                       final[np.argsort(perm)])
    return sort_breadth_first(f)


def add_weight_to_supervision(sup: Supervision, normalization_fst, max_states: int = 10000) -> Supervision:
    """`AddWeightToSupervisionFst` (what nnet3-chain-get-egs does with --normalization-fst-scale 1):
    each sequence's FST determinized and minimized, composed with normalization.fst (the den
    graph's initial probabilities and transition weights), determinized and minimized again (all in
    the tropical semiring, OpenFst's Determinize and Minimize), states sorted breadth first."""
    import kaldifst
    if isinstance(normalization_fst, (str, Path)):
        normalization_fst = kaldifst.StdVectorFst.read(str(normalization_fst))

    def det_min(f):
        if f.num_states >= max_states:
            raise ValueError(f"not determinizing a supervision FST of {f.num_states} states")
        d = kaldifst.determinize(f)
        kaldifst.minimize(d)
        return d

    out = []
    for k, fst in enumerate(sup.fsts):
        f = det_min(to_kaldifst(fst))
        kaldifst.arcsort(f, sort_type="olabel")
        composed = kaldifst.compose(f, normalization_fst)
        if composed.num_states == 0:
            raise ValueError(f"sequence {k}: the supervision has no path through the normalization FST")
        out.append(from_kaldifst(det_min(kaldifst.StdVectorFst(composed))))
    return Supervision(sup.weight, sup.frames_per_sequence, sup.label_dim, out)
