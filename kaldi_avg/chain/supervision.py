"""Chain supervision without an egs dump: `chain-get-supervision` and the supervision half of
`nnet3-chain-get-egs` (docs/chain.md 7).

Kaldi: `src/chain/chain-supervision.{h,cc}` (`SupervisionOptions`, `AlignmentToProtoSupervision`,
`PhoneLatticeToProtoSupervision`, `ProtoSupervisionToSupervision` with `TimeEnforcerFst`,
`SupervisionSplitter`, `AddWeightToSupervisionFst`), `src/chainbin/chain-get-supervision.cc`,
`src/chainbin/nnet3-chain-get-egs.cc` (`ProcessFile`), `src/nnet3/nnet-example-utils.cc`
(`UtteranceSplitter` with a frame-subsampling factor).

1. Proto-supervision: the phones an utterance may have and, per output frame (input frame /
   `frame_subsampling_factor`), which phones may be active there: a phone spanning input frames
   [b, e) is allowed on output frames ceil(max(0, b - left_tolerance) / f) ..
   ceil(min(T, e + right_tolerance) / f) - 1. From phones with lengths (`ali-to-phones
   --write-lengths`, a linear phone acceptor) or a phone-aligned lattice (`lattice-align-phones
   --replace-output-symbols=true`, kaldi_avg/chain/phone_lattice.py; the lattice's own states and
   arcs, graph costs times `lm_scale`, 0 by default).
2. `ProtoSupervisionToSupervision`: the phone FST composed with the tree's phonetic context
   (`kaldifst.compose_context`, Kaldi's `ComposeDeterministicOnDemandInverse`), the HMMs
   (`GetHTransducer` with transition scale 0, `TableCompose`), self-loops (scale 0, reordered),
   projected on transition-ids, epsilons removed if any; then composed with the time enforcer
   (state t = output frame; a transition-id may be taken at t only if its phone is allowed at t;
   final only at t = number of frames), relabelled pdf-id + 1, `Connect`ed and numbered breadth
   first. Not determinized: every path is one segmentation of the phones into frames.
3. `nnet3-chain-get-egs`: chunks as `UtteranceSplitter` cuts them (widths in input frames,
   multiples of the subsampling factor; gaps spread over output frames), the supervision of each
   chunk's output frames (`SupervisionSplitter::GetFrameRange`: the states of those frames, a
   new start with epsilons to the first frame's states, arcs leaving the range into one new final
   state), composed with normalization.fst (`AddWeightToSupervisionFst`: determinized, minimized,
   composed, determinized, minimized, numbered breadth first), output weights 1/(number of chunks
   sharing a frame), times the utterance's deriv weights when given.

On the FSDD fixture our supervisions for the 20 lattices equal Kaldi's `supervision.20utt.txt`
state for state and arc for arc (tests/chain/test_supervision.py).
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from ..data.chunking import Chunk, ChunkConfig, split_utterance
from ..errors import UsageError
from ..kaldi.lattice import CompactLattice
from .den_graph import ChainModelParts
from .fstext import Graph, project_input
from .phone_lattice import PhoneAlignOptions, phone_align_lattice
from .supervision_io import (
    Supervision,
    SupervisionFst,
    add_weight_to_supervision,
    from_kaldifst,
    sort_breadth_first,
)

SUPERVISION_MAX_STATES = 200000     # kSupervisionMaxStates


class SupervisionError(UsageError):
    """A supervision cannot be built (one line naming the utterance and why)."""


@dataclass(frozen=True)
class SupervisionOptions:
    """`chain::SupervisionOptions` (chain-get-supervision's options, Kaldi's defaults)."""
    left_tolerance: int = 5
    right_tolerance: int = 5
    frame_subsampling_factor: int = 1
    lm_scale: float = 0.0
    convert_to_pdfs: bool = True

    def __post_init__(self):
        if not (self.left_tolerance >= 0 and self.right_tolerance >= 0 and self.frame_subsampling_factor > 0
                and self.left_tolerance + self.right_tolerance + 1 >= self.frame_subsampling_factor):
            raise SupervisionError(
                f"supervision options: tolerances {self.left_tolerance}/{self.right_tolerance} must be >= 0 "
                f"with left + right + 1 >= frame-subsampling-factor {self.frame_subsampling_factor}")
        if not 0.0 <= self.lm_scale < 1.0:
            raise SupervisionError(f"supervision options: --lm-scale={self.lm_scale} must be in [0, 1)")


@dataclass
class ProtoSupervision:
    """`chain::ProtoSupervision`: phones allowed per output frame (sorted) and the phone FST."""
    allowed_phones: list[list[int]]
    fst: kaldifst.StdVectorFst

    @property
    def num_frames(self) -> int:
        return len(self.allowed_phones)


def _allow(allowed: list[list[int]], phone: int, begin: int, end: int, num_frames: int,
           opts: SupervisionOptions) -> None:
    f = opts.frame_subsampling_factor
    t_begin = max(0, begin - opts.left_tolerance)
    t_end = min(num_frames, end + opts.right_tolerance)
    for t in range((t_begin + f - 1) // f, (t_end + f - 1) // f):
        allowed[t].append(phone)


def alignment_to_proto_supervision(opts: SupervisionOptions, phones: Sequence[int],
                                   durations: Sequence[int]) -> ProtoSupervision | None:
    """`AlignmentToProtoSupervision`: phones with their lengths in input frames; None for an
    utterance of no frames."""
    if not phones or len(phones) != len(durations):
        raise SupervisionError("alignment: need as many durations as phones, at least one")
    if min(phones) <= 0 or min(durations) <= 0:
        raise SupervisionError("alignment: phones and durations must be positive")
    num_frames = int(sum(durations))
    f = opts.frame_subsampling_factor
    allowed: list[list[int]] = [[] for _ in range((num_frames + f - 1) // f)]
    if not allowed:
        return None
    t = 0
    for phone, dur in zip(phones, durations):
        _allow(allowed, int(phone), t, t + int(dur), num_frames, opts)
        t += int(dur)
    return ProtoSupervision([sorted(set(a)) for a in allowed],
                            kaldifst.make_linear_acceptor([int(p) for p in phones]))


def _push_to_initial(g: Graph) -> Graph:
    """`fst::Push(REWEIGHT_TO_INITIAL, remove_total_weight=true)` in the tropical semiring on an
    acyclic FST: arc weights w + d(next) - d(state), final weights f - d(state), d the cost of the
    best path to a final state; so every path loses the best path's cost (float32 sums)."""
    f32 = np.float32
    d = [math.inf] * g.num_states
    order: list[int] = []
    seen = [False] * g.num_states

    def visit(s0: int) -> None:          # post-order DFS (lattices are acyclic)
        stack = [(s0, 0)]
        seen[s0] = True
        while stack:
            s, i = stack[-1]
            if i < len(g.arcs[s]):
                stack[-1] = (s, i + 1)
                n = g.arcs[s][i][3]
                if not seen[n]:
                    seen[n] = True
                    stack.append((n, 0))
            else:
                stack.pop()
                order.append(s)
    for s in range(g.num_states):
        if not seen[s]:
            visit(s)
    for s in order:
        best = g.finals[s]
        for _, _, w, n in g.arcs[s]:
            best = min(best, float(f32(w) + f32(d[n])))
        d[s] = best
    out = Graph(g.start, [], [])
    for s in range(g.num_states):
        out.finals.append(float(f32(g.finals[s]) - f32(d[s])) if math.isfinite(g.finals[s]) else math.inf)
        out.arcs.append([(i, o, float(f32(f32(w) + f32(d[n])) - f32(d[s])), n) for i, o, w, n in g.arcs[s]])
    return out


def phone_lattice_to_proto_supervision(opts: SupervisionOptions, lat: CompactLattice,
                                       what: str = "lattice") -> ProtoSupervision:
    """`PhoneLatticeToProtoSupervision` on a phone-aligned, topologically sorted lattice (labels
    are phones, each arc's string that phone's transition-ids)."""
    if lat.num_states == 0 or lat.start < 0:
        raise SupervisionError(f"{what}: empty lattice")
    times, num_frames = lat.state_times()
    f = opts.frame_subsampling_factor
    allowed: list[list[int]] = [[] for _ in range((num_frames + f - 1) // f)]
    g = Graph(lat.start, [], [])
    for s in range(lat.num_states):
        g.add_state()
        for phone, w, d in lat.arcs[s]:
            if phone == 0:
                raise SupervisionError(f"{what}: CompactLattice has epsilon arc (not phone-aligned?)")
            g.arcs[s].append((phone, phone, float(np.float32(w[0] * opts.lm_scale)), d))
            _allow(allowed, phone, times[s], times[s] + len(w[2]), num_frames, opts)
        if lat.finals[s] is not None:
            g.finals[s] = float(np.float32(lat.finals[s][0] * opts.lm_scale))
            if times[s] != num_frames:
                raise SupervisionError(f"{what}: time of final state {s} is {times[s]}, not the number of "
                                       f"frames {num_frames}; is the lattice phone-aligned?")
    for t, a in enumerate(allowed):
        if not a:
            raise SupervisionError(f"{what}: no phone is allowed on output frame {t}")
    if opts.lm_scale != 0.0:
        g = _push_to_initial(g)
    return ProtoSupervision([sorted(set(a)) for a in allowed], g.to_fst())


def _time_enforce(g: Graph, allowed: list[list[int]], tid_phone: np.ndarray, labels: np.ndarray) -> Graph:
    """`ComposeDeterministicOnDemand(transition_id_fst, TimeEnforcerFst)` then `Connect`: states
    (state, frame) created in FIFO order; an arc keeps its input label, its output label becomes
    `labels[tid]`; final where the FST is final at the last frame."""
    num_frames = len(allowed)
    allowed_sets = [set(a) for a in allowed]
    out = Graph(0, [], [])
    index = {(g.start, 0): 0}
    out.add_state()
    queue = [(g.start, 0)]
    head = 0
    while head < len(queue):
        s, t = queue[head]
        q = index[(s, t)]
        head += 1
        if t == num_frames and math.isfinite(g.finals[s]):
            out.finals[q] = g.finals[s]
        if t == num_frames:
            continue
        for ilabel, olabel, w, n in g.arcs[s]:
            if olabel == 0:
                key = (n, t)
            elif int(tid_phone[olabel]) in allowed_sets[t]:
                key = (n, t + 1)
            else:
                continue
            nq = index.get(key)
            if nq is None:
                nq = index[key] = out.add_state()
                queue.append(key)
            out.arcs[q].append((ilabel, int(labels[olabel]) if olabel else 0, w, nq))
    # Connect: everything is accessible; drop the states that reach no final state
    coaccess = [math.isfinite(x) for x in out.finals]
    rev: list[list[int]] = [[] for _ in range(out.num_states)]
    for s, arcs in enumerate(out.arcs):
        for a in arcs:
            rev[a[3]].append(s)
    stack = [s for s in range(out.num_states) if coaccess[s]]
    while stack:
        d = stack.pop()
        for s in rev[d]:
            if not coaccess[s]:
                coaccess[s] = True
                stack.append(s)
    if not coaccess[0]:
        return Graph()
    new = np.cumsum(coaccess) - 1
    return Graph(0, [out.finals[s] for s in range(out.num_states) if coaccess[s]],
                 [[(i, o, w, int(new[n])) for i, o, w, n in out.arcs[s] if coaccess[n]]
                  for s in range(out.num_states) if coaccess[s]])


def transition_id_fst(parts: ChainModelParts, phone_fst: kaldifst.StdVectorFst) -> Graph:
    """The transition-id acceptor of `ProtoSupervisionToSupervision` before the time enforcer:
    context, H (no transition probabilities), self-loops (reordered, scale 0), epsilons removed."""
    ctx_dep, trans_model = parts.ctx_dep, parts.trans_model
    # right context: Kaldi adds the subsequential loop and projects, as compose_context does with
    # project_ifst (its symbol differs from Kaldi's, phones.back() + 1; the projection below
    # discards it either way)
    context_dep_fst, ilabel_info = kaldifst.compose_context(
        disambig_syms=[], context_width=ctx_dep.context_width, central_position=ctx_dep.central_position,
        ifst=kaldifst.StdVectorFst(phone_fst), project_ifst=True)
    context_dep_fst = project_input(Graph.from_fst(context_dep_fst)).to_fst()
    h_fst, disambig_h = khg.get_h_transducer(ilabel_info, ctx_dep, trans_model,
                                             khg.HTransducerConfig(transition_scale=0.0))
    assert not disambig_h
    tid_fst = kaldifst.StdVectorFst(kaldifst.compose(h_fst, context_dep_fst))   # TableCompose
    tid_fst = khg.add_self_loops(self_loop_scale=0.0, disambig_syms=[], reorder=True,
                                 trans_model=trans_model, ifst=tid_fst)
    g = project_input(Graph.from_fst(tid_fst))
    if any(a[0] == 0 for arcs in g.arcs for a in arcs):
        fst = g.to_fst()
        kaldifst.rmepsilon(fst)
        g = Graph.from_fst(fst)
    if g.num_states == 0:
        raise SupervisionError("the transition-id FST is empty")
    return g


def proto_supervision_to_supervision(parts: ChainModelParts, proto: ProtoSupervision,
                                     convert_to_pdfs: bool = True, what: str = "utterance") -> Supervision:
    """`ProtoSupervisionToSupervision` (module docstring, step 2)."""
    tm = parts.trans_model
    g = transition_id_fst(parts, proto.fst)
    tid_phone = np.asarray([0] + [tm.transition_id_to_phone(t) for t in range(1, tm.num_transition_ids + 1)])
    if convert_to_pdfs:
        labels = np.asarray(tm.transition_id_to_pdf_array(), dtype=np.int64) + 1
        labels[0] = 0
    else:
        labels = np.arange(tm.num_transition_ids + 1)
    sup = _time_enforce(g, proto.allowed_phones, tid_phone, labels)
    if sup.num_states == 0:
        raise SupervisionError(f"{what}: supervision FST is empty (too many phones for too few frames?)")
    # project on the output (pdf-id + 1) labels, number the states breadth first
    fst = Graph(sup.start, sup.finals, [[(o, o, w, n) for _, o, w, n in arcs] for arcs in sup.arcs])
    label_dim = tm.num_pdfs if convert_to_pdfs else tm.num_transition_ids
    return Supervision(1.0, proto.num_frames, label_dim, [_graph_to_supervision_fst(fst)])


def _graph_to_supervision_fst(g: Graph) -> SupervisionFst:
    src = [s for s, arcs in enumerate(g.arcs) for _ in arcs]
    flat = [a for arcs in g.arcs for a in arcs]
    fst = SupervisionFst(
        g.num_states, np.asarray(src, np.int64), np.asarray([a[3] for a in flat], np.int64),
        np.asarray([a[0] for a in flat], np.int64), np.asarray([a[2] for a in flat], np.float32),
        np.asarray(g.finals, np.float32))
    return sort_breadth_first(fst)


# -- chain-get-supervision ------------------------------------------------------------------------
def supervision_from_phone_lattice(parts: ChainModelParts, lat: CompactLattice, opts: SupervisionOptions,
                                   what: str = "lattice") -> Supervision:
    """chain-get-supervision --lattice-input=true on one phone-aligned lattice."""
    proto = phone_lattice_to_proto_supervision(opts, lat, what)
    return proto_supervision_to_supervision(parts, proto, opts.convert_to_pdfs, what)


def supervision_from_lattice(parts: ChainModelParts, lat_trans_model, lat: CompactLattice,
                             opts: SupervisionOptions, what: str = "lattice") -> Supervision:
    """`lattice-align-phones --replace-output-symbols=true <lat-model>` then
    `chain-get-supervision --lattice-input=true`, on a lattice as decoding/alignment wrote it."""
    aligned, ok = phone_align_lattice(lat, lat_trans_model, PhoneAlignOptions(replace_output_symbols=True))
    if aligned.start < 0:
        raise SupervisionError(f"{what}: phone-aligned lattice is empty")
    return supervision_from_phone_lattice(parts, aligned, opts, what)


def supervision_from_phones(parts: ChainModelParts, phones_with_lengths: Sequence[tuple[int, int]],
                            opts: SupervisionOptions, what: str = "alignment") -> Supervision:
    """chain-get-supervision on `ali-to-phones --write-lengths` output: (phone, length) pairs in
    input frames."""
    phones = [p for p, _ in phones_with_lengths]
    lengths = [n for _, n in phones_with_lengths]
    proto = alignment_to_proto_supervision(opts, phones, lengths)
    if proto is None:
        raise SupervisionError(f"{what}: no frames")
    return proto_supervision_to_supervision(parts, proto, opts.convert_to_pdfs, what)


def get_supervisions(parts: ChainModelParts, items: Iterable[tuple[str, object]], opts: SupervisionOptions,
                     lattice_input: bool, lat_trans_model=None) -> Iterator[tuple[str, Supervision]]:
    """chain-get-supervision over (key, input) pairs: phone-aligned lattices (`lattice_input`;
    raw lattices if `lat_trans_model` is given: they are phone-aligned first) or (phone, length)
    lists. Utterances that fail are skipped, as Kaldi does with a warning (SupervisionError
    carries the reason; this generator lets it propagate only when every input failed)."""
    done, errors, last = 0, 0, None
    for key, value in items:
        try:
            if not lattice_input:
                yield key, supervision_from_phones(parts, value, opts, key)
            elif lat_trans_model is not None:
                yield key, supervision_from_lattice(parts, lat_trans_model, value, opts, key)
            else:
                yield key, supervision_from_phone_lattice(parts, value, opts, key)
            done += 1
        except SupervisionError as e:
            errors += 1
            last = e
    if errors and done <= errors and last is not None:
        raise SupervisionError(f"supervision failed for {errors} of {done + errors} utterances; last: {last}")


# -- splitting (nnet3-chain-get-egs) ----------------------------------------------------------------
class SupervisionSplitter:
    """`chain::SupervisionSplitter` on a one-sequence supervision."""

    def __init__(self, sup: Supervision):
        if sup.num_sequences != 1:
            raise SupervisionError("splitting a supervision of several sequences")
        self.sup = sup
        self.fst = sup.fsts[0]
        self.times = self.fst.state_times()
        if int(self.times.max()) != sup.frames_per_sequence:
            raise SupervisionError(f"supervision FST spans {int(self.times.max())} frames, "
                                   f"frames_per_sequence is {sup.frames_per_sequence}")
        order = np.argsort(self.fst.src, kind="stable")
        self._arc_order = order
        self._arc_start = np.searchsorted(self.fst.src[order], np.arange(self.fst.num_states + 1))

    def range_fst(self, begin_frame: int, num_frames: int) -> kaldifst.StdVectorFst:
        """`GetFrameRange`'s FST (`CreateRangeFst`): state 0 a new start with epsilon arcs to
        the states of `begin_frame`, then the states of frames begin..end-1, then one final state
        that every arc leaving the range enters."""
        end_frame = begin_frame + num_frames
        if not (num_frames > 0 and begin_frame >= 0 and end_frame <= self.sup.frames_per_sequence):
            raise SupervisionError(f"frame range {begin_frame}+{num_frames} outside 0..{self.sup.frames_per_sequence}")
        begin_state = int(np.searchsorted(self.times, begin_frame))
        end_state = int(np.searchsorted(self.times, end_frame))
        f = self.fst
        out = kaldifst.StdVectorFst()
        start = out.add_state()
        out.start = start
        for _ in range(begin_state, end_state):
            out.add_state()
        final = out.add_state()
        out.set_final(final, 0.0)
        for s in range(begin_state, end_state):
            q = s - begin_state + 1
            if self.times[s] == begin_frame:
                out.add_arc(start, kaldifst.StdArc(0, 0, 0.0, q))
            for k in self._arc_order[self._arc_start[s]:self._arc_start[s + 1]]:
                d = int(f.dst[k])
                lab = int(f.label[k])
                nq = final if d >= end_state else d - begin_state + 1
                out.add_arc(q, kaldifst.StdArc(lab, lab, float(f.weight[k]), nq))
        return out

    def get_frame_range(self, begin_frame: int, num_frames: int) -> Supervision:
        """The supervision of output frames [begin, begin + num) with its epsilons removed
        (Kaldi keeps them until `AddWeightToSupervisionFst`; RmEpsilon first is what it does)."""
        fst = self.range_fst(begin_frame, num_frames)
        kaldifst.rmepsilon(fst)
        return Supervision(self.sup.weight, num_frames, self.sup.label_dim, [from_kaldifst(fst)])


def chunk_supervision(splitter: SupervisionSplitter, chunk: Chunk, frame_subsampling_factor: int,
                      normalization_fst: kaldifst.StdVectorFst | None) -> Supervision:
    """The supervision of the chunk's output frames, composed with normalization.fst. A chunk
    whose FST has no path through it keeps its unnormalized supervision, as Kaldi writes it
    (with a warning, "should be extremely rare")."""
    f = frame_subsampling_factor
    part = splitter.get_frame_range(chunk.first_frame // f, chunk.width // f)
    if normalization_fst is None:
        return part
    try:
        return add_weight_to_supervision(part, normalization_fst, SUPERVISION_MAX_STATES)
    except ValueError:
        return part


@dataclass
class ChainExample:
    """What one NnetChainExample holds for its output: the chunk (its input frames are the
    caller's to cut, with contexts) and the normalized supervision with per-frame weights."""
    key: str
    chunk: Chunk
    supervision: Supervision
    deriv_weights: np.ndarray


def chain_examples(utt: str, supervision: Supervision, num_input_frames: int, config: ChunkConfig,
                   frame_subsampling_factor: int, normalization_fst=None, deriv_weights: np.ndarray | None = None,
                   rng: random.Random | None = None, supervision_length_tolerance: int = 1) -> list[ChainExample]:
    """`ProcessFile` of nnet3-chain-get-egs for one utterance (keys `<utt>-<first_frame>`).
    An utterance whose lengths do not match (beyond `supervision_length_tolerance` output
    frames), or that is shorter than every chunk, has none. `deriv_weights` (per output frame of the utterance; missing
    frames count 0) multiply the chunk's output weights, as `--deriv-weights-rspecifier` does."""
    f = frame_subsampling_factor
    num_out = supervision.frames_per_sequence
    if isinstance(normalization_fst, (str, os.PathLike)):
        normalization_fst = kaldifst.StdVectorFst.read(str(normalization_fst))
    if deriv_weights is not None and abs(len(deriv_weights) - num_out) > supervision_length_tolerance:
        return []
    if abs(num_out - (num_input_frames + f - 1) // f) > supervision_length_tolerance:
        return []
    num_input_frames = min(num_input_frames, num_out * f)
    chunks = split_utterance(num_input_frames, replace(config, frame_subsampling_factor=f), rng)
    splitter = SupervisionSplitter(supervision)
    out = []
    for chunk in chunks:
        start, n = chunk.first_frame // f, chunk.width // f
        part = chunk_supervision(splitter, chunk, f, normalization_fst)
        w = np.asarray(chunk.weights, dtype=np.float32)
        if deriv_weights is not None:
            dw = np.zeros(n, dtype=np.float32)
            avail = max(0, min(n, len(deriv_weights) - start))
            dw[:avail] = np.asarray(deriv_weights, dtype=np.float32)[start:start + avail]
            w = dw * w
        out.append(ChainExample(f"{utt}-{chunk.first_frame}", chunk, part, w))
    return out


__all__ = ["ChainExample", "ProtoSupervision", "SupervisionError", "SupervisionOptions",
           "SupervisionSplitter", "alignment_to_proto_supervision", "chain_examples", "chunk_supervision",
           "get_supervisions", "phone_lattice_to_proto_supervision", "proto_supervision_to_supervision",
           "supervision_from_lattice", "supervision_from_phone_lattice", "supervision_from_phones",
           "transition_id_fst"]
