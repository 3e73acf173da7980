"""The chain HMM topology, chain tree directories, and alignments converted to the chain topology
(docs/chain.md 6).

Kaldi: `egs/wsj/s5/steps/nnet3/chain/gen_topo.py` (the topology), `steps/nnet3/chain/build_tree.sh`
(the tree directory: `tree`, `final.mdl` (= 1.mdl, a GMM whose transition model has the chain
topology), `ali.N.gz` converted with `convert-ali --frame-subsampling-factor`, `num_jobs`),
`src/hmm/hmm-utils.cc` (`SplitToPhones`, `ConvertAlignment`, `ComputeNewPhoneLengths`,
`GetRandomAlignmentForPhone`, `ChangeReorderingOfAlignment`), `src/bin/convert-ali.cc`,
`src/bin/ali-to-phones.cc`.

The chain topology is one emitting state per phone: a forward transition that emits pdf-class 0
and a self-loop that emits pdf-class 1, both with probability 0.5 (never used: chain training
scales transition probabilities by 0); with `reorder=true` graphs the forward pdf is the phone's
first frame and the self-loop pdf every later frame, so a phone can last a single (subsampled)
frame. gen_topo.py lists silence phones first, then nonsilence phones, in one entry.

The pip-only path (no Kaldi binaries): `monophone_chain_tree` makes a monophone tree for that
topology (kaldi-hmm-gmm's `monophone_context_dependency[_shared]`, as gmm-init-mono builds its tree;
2 pdfs per phone or per shared-phone set), `convert_alignment` is `convert-ali` (with
`--frame-subsampling-factor`), and `write_chain_tree_dir` writes `tree`, `0.trans_mdl`,
`ali.N.gz` and `num_jobs` as `read_chain_tree_dir` (and our den-graph/phone-LM commands) read
them. A context-dependent tree is out of reach there: kaldi-hmm-gmm 1.1.4 has no
`ContextDependency` constructor (only `monophone_context_dependency[_shared]`, and loading a
tree file's bytes through its pickle state, which is how `frontend.hmm.read_tree` reads Kaldi's
`tree`), no EventMap but `ConstantEventMap`, and nothing of acc-tree-stats
(`AccumulateTreeStats`), cluster-phones / compile-questions (`Questions`) or build-tree
(`BuildTree`); it binds `GaussClusterable` and `sum_clusterable_objf`, the likelihoods the
splitting uses, but the statistics, the greedy splitting with its questions and the writing of
the EventMap would all have to be written here. Kaldi's own `tree` (as the FSDD fixture's, a
left biphone with 64 pdfs) is read and used as is.
"""
from __future__ import annotations

import gzip
import os
import random
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import kaldi_hmm_gmm as khg
import numpy as np

from ..atomic import atomic_path, write_bytes
from ..errors import UsageError
from ..frontend.hmm import from_khg, khg_topology, read_tree, to_khg, write_tree
from ..kaldi.alignment import alignment_archives, read_transition_ids
from ..kaldi.binary import KaldiFormatError, KaldiReader, KaldiWriter
from ..kaldi.tables import write_int_vector_table
from ..kaldi.transition import HmmState, HmmTopology, TransitionModel, read_transition_model
from ..kaldi.tree import read_tree_num_pdfs


class ChainTopologyError(UsageError):
    """A tree directory, topology or alignment that does not fit the chain model (one line)."""


# -- the topology (steps/nnet3/chain/gen_topo.py) ---------------------------------------------------
def gen_topo(nonsilence_phones: Sequence[int], silence_phones: Sequence[int]) -> str:
    """`steps/nnet3/chain/gen_topo.py <nonsilence csl> <silence csl>`'s output, byte for byte."""
    phones = [int(p) for p in silence_phones] + [int(p) for p in nonsilence_phones]
    if not phones or min(phones) <= 0 or len(set(phones)) != len(phones):
        raise ChainTopologyError(f"gen_topo: phones must be distinct positive integers, got {phones}")
    return ("<Topology>\n<TopologyEntry>\n<ForPhones>\n" + " ".join(map(str, phones)) + "\n</ForPhones>\n"
            "<State> 0 <ForwardPdfClass> 0 <SelfLoopPdfClass> 1 <Transition> 0 0.5 <Transition> 1 0.5 </State>\n"
            "<State> 1 </State>\n</TopologyEntry>\n</Topology>\n")


def gen_topo_main(argv: list[str] | None = None) -> int:
    """`python -m kaldi_avg.chain.topology <nonsilence csl> <silence csl>` (gen_topo.py's usage)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("Usage: python -m kaldi_avg.chain.topology <colon-separated-nonsilence-phones> "
              "<colon-separated-silence-phones>", file=sys.stderr)
        return 1
    try:
        sys.stdout.write(gen_topo([int(x) for x in args[0].split(":")], [int(x) for x in args[1].split(":")]))
    except ValueError as e:
        print(f"gen_topo: {e}", file=sys.stderr)
        return 1
    return 0


def chain_topology(nonsilence_phones: Sequence[int], silence_phones: Sequence[int]) -> HmmTopology:
    """The topology of `gen_topo` as our HmmTopology (what `<Topology>` in 0.trans_mdl holds)."""
    return HmmTopology.read(KaldiReader.from_bytes(gen_topo(nonsilence_phones, silence_phones).encode(),
                                                   source="gen_topo"))


def is_chain_topology(topo: HmmTopology) -> bool:
    """Every entry is gen_topo.py's: one emitting state (forward class 0, self-loop class 1, a
    self-loop and a transition to the final state) and the final state."""
    for states in topo.entries:
        if len(states) != 2 or states[1].transitions or (states[1].forward_pdf_class,
                                                         states[1].self_loop_pdf_class) != (-1, -1):
            return False
        s = states[0]
        if (s.forward_pdf_class, s.self_loop_pdf_class) != (0, 1) or sorted(d for d, _ in s.transitions) != [0, 1]:
            return False
    return bool(topo.entries)


def num_pdf_classes(states: list[HmmState]) -> int:
    """`HmmTopology::NumPdfClasses` of one entry."""
    classes = [c for s in states for c in (s.forward_pdf_class, s.self_loop_pdf_class) if c >= 0]
    return max(classes) + 1 if classes else 0


def min_length(states: list[HmmState]) -> int:
    """`HmmTopology::MinLength`: the fewest frames a path from state 0 to the final state takes
    (each transition out of an emitting state is one frame)."""
    final = len(states) - 1
    best = [None] * len(states)
    best[0] = 0
    changed = True
    while changed:
        changed = False
        for i, s in enumerate(states):
            if best[i] is None:
                continue
            cost = best[i] + (1 if s.forward_pdf_class >= 0 else 0)
            for d, _ in s.transitions:
                if best[d] is None or cost < best[d]:
                    best[d] = cost
                    changed = True
    if best[final] is None:
        raise ChainTopologyError("topology entry has no path to its final state")
    return best[final]


# -- the tree directory ----------------------------------------------------------------------------
@dataclass
class ChainTreeDir:
    """What `steps/nnet3/chain/build_tree.sh` leaves in a tree directory, as we use it."""
    path: str
    tree: khg.ContextDependency
    trans_model: TransitionModel
    alignments: dict[str, np.ndarray] = field(default_factory=dict)   # transition-ids, subsampled

    @property
    def num_pdfs(self) -> int:
        return int(self.tree.num_pdfs)

    def khg_trans_model(self) -> khg.TransitionModel:
        return to_khg(self.trans_model, self.tree, source=os.path.join(self.path, "transition model"))

    def phone_sequences(self) -> dict[str, list[int]]:
        """`ali-to-phones <mdl> ark:ali ark,t:-` of every alignment (what chain-est-phone-lm reads)."""
        return {k: [p for p, _ in phones_with_lengths(self.trans_model, a, k)] for k, a in self.alignments.items()}


def read_chain_tree_dir(path: str, read_alignments: bool = True) -> ChainTreeDir:
    """A chain tree directory: `tree`, the transition model of `0.trans_mdl` or else `final.mdl`
    (a GMM `.mdl` starts with it), and with `read_alignments` the `ali.N.gz` of `num_jobs`. The
    model must have the chain topology and match the tree (same tuples)."""
    tree_path = os.path.join(path, "tree")
    for name in ("0.trans_mdl", "final.mdl"):
        mdl_path = os.path.join(path, name)
        if os.path.isfile(mdl_path):
            break
    else:
        raise ChainTopologyError(f"{path}: neither 0.trans_mdl nor final.mdl is there")
    tree = read_tree(tree_path)
    if read_tree_num_pdfs(tree_path) != tree.num_pdfs:
        raise KaldiFormatError(f"{tree_path}: pdf count disagrees with kaldi-hmm-gmm's reading")
    tm = read_transition_model(mdl_path)
    if not is_chain_topology(tm.topology):
        raise ChainTopologyError(f"{mdl_path}: the topology is not the chain one of gen_topo.py "
                                 "(one state, forward pdf-class 0, self-loop pdf-class 1)")
    to_khg(tm, tree, source=mdl_path)        # checks that the model's tuples are the tree's
    out = ChainTreeDir(path, tree, tm)
    if read_alignments:
        for archive in alignment_archives(path):
            for key, tids in read_transition_ids(archive).items():
                if key in out.alignments:
                    raise KaldiFormatError(f"{archive}: utterance {key!r} is in two archives")
                tm.tids_to_pdfs(tids, f"{archive}: {key}")
                out.alignments[key] = tids
    return out


# -- ali-to-phones ---------------------------------------------------------------------------------
def _is_reordered(tm: TransitionModel, tids: Sequence[int]) -> bool:
    """`IsReordered`: whether self-loops come after the forward transition of their state."""
    tstate, loop = tm.transition_id_states(), tm.self_loop_mask()
    for a, b in zip(tids, tids[1:]):
        if tstate[a] != tstate[b]:
            if loop[a]:
                return True
            if loop[b]:
                return False
    if not len(tids):
        return False
    if loop[tids[0]]:
        return False
    return bool(loop[tids[-1]])


def split_to_phones(tm: TransitionModel, tids: Sequence[int]) -> tuple[list[list[int]], bool]:
    """`SplitToPhones`: the alignment cut into phones ([transition-ids] each) and whether it
    looked consistent (each piece starting in HMM state 0, ending with a final transition)."""
    tids = [int(t) for t in tids]
    tm.tids_to_pdfs(tids)
    reordered = _is_reordered(tm, tids)
    tstate, loop, final = tm.transition_id_states(), tm.self_loop_mask(), tm.final_mask()
    phone_of = tm.transition_id_phones()
    ends, ok = [], True
    i, n = 0, len(tids)
    while i < n:
        t = tids[i]
        if final[t]:
            if reordered:
                while i + 1 < n and loop[tids[i + 1]]:
                    i += 1
            ends.append(i + 1)
        elif i + 1 == n:
            ok = False
            ends.append(i + 1)
        elif tstate[t] != tstate[tids[i + 1]] and phone_of[t] != phone_of[tids[i + 1]]:
            ok = False
            ends.append(i + 1)
        i += 1
    pieces, cur = [], 0
    for e in ends:
        first = tids[cur]
        entry = tm.topology.entry_for_phone(int(phone_of[first]))
        if entry[0].forward_pdf_class != -1 and tm.transition_id_hmm_states()[first] != 0:
            ok = False
        pieces.append(tids[cur:e])
        cur = e
    return pieces, ok


def phones_with_lengths(tm: TransitionModel, tids: Sequence[int], what: str = "alignment"
                        ) -> list[tuple[int, int]]:
    """`ali-to-phones --write-lengths`: (phone, number of frames) per phone of the alignment."""
    pieces, ok = split_to_phones(tm, tids)
    if not ok:
        raise ChainTopologyError(f"{what}: the alignment does not split into whole phones (wrong model?)")
    phone_of = tm.transition_id_phones()
    return [(int(phone_of[p[0]]), len(p)) for p in pieces]


# -- convert-ali -----------------------------------------------------------------------------------
def compute_new_phone_lengths(topo: HmmTopology, phones: Sequence[int], old_lengths: Sequence[int],
                              conversion_shift: int, subsample_factor: int) -> list[int] | None:
    """`ComputeNewPhoneLengths`: phone boundaries b mapped to (b + shift) // factor, then each
    phone shorter than its topology's minimum borrows a frame from the nearest phone (left
    first on a tie) that has one to spare; None if impossible."""
    mins = [min_length(topo.entry_for_phone(p)) for p in phones]
    new, elapsed = [], 0
    for n in old_lengths:
        a = (elapsed + conversion_shift) // subsample_factor
        elapsed += n
        new.append((elapsed + conversion_shift) // subsample_factor - a)
    changed = True
    while changed:
        changed = False
        for i in range(len(new)):
            if new[i] >= mins[i]:
                continue
            changed = True
            best, best_dist = -1, None
            dist = 0
            for j in range(i - 1, -1, -1):
                if new[j] > mins[j]:
                    best, best_dist = j, dist
                    break
                dist += new[j]
            dist = 0
            for j in range(i + 1, len(new)):
                if new[j] > mins[j]:
                    if best_dist is None or dist < best_dist:
                        best = j
                    break
                dist += new[j]
            if best < 0:
                return None
            new[i] += 1
            new[best] -= 1
    return new


def _random_phone_alignment(tm: TransitionModel, phone: int, pdfs: list[int], length: int,
                            rng: random.Random) -> list[int]:
    """`GetRandomAlignmentForPhone` (non-reordered order): a path of exactly `length` frames
    through the phone's HMM, choosing uniformly among the arcs (and stopping) that can still
    finish in time at each step, as `RandGen` with a uniform selector on the HMM composed with a
    length constraint does. The chain topology has exactly one such path."""
    states = tm.topology.entry_for_phone(phone)
    final = len(states) - 1

    def tid(state: int, index: int) -> int:
        s = states[state]
        fpdf, slpdf = pdfs[s.forward_pdf_class], pdfs[s.self_loop_pdf_class]
        return tm.pair_to_transition_id(tm.tuple_to_transition_state(phone, state, fpdf, slpdf), index)

    # frames needed from each state to the final state, per remaining length: can[state][k]
    can = [[False] * (length + 1) for _ in states]
    can[final][0] = True
    for k in range(0, length + 1):
        for _ in states:          # relax non-emitting (epsilon) moves within the same k
            for i, s in enumerate(states):
                if i == final:
                    continue
                emits = s.forward_pdf_class >= 0
                for d, _p in s.transitions:
                    if emits and k >= 1 and can[d][k - 1]:
                        can[i][k] = True
                    if not emits and can[d][k]:
                        can[i][k] = True
    if not can[0][length]:
        raise ChainTopologyError(f"phone {phone}: no path of {length} frames through its topology "
                                 f"(minimum {min_length(states)})")
    out, state, k = [], 0, length
    while state != final:
        s = states[state]
        emits = s.forward_pdf_class >= 0
        choices = [(idx, d) for idx, (d, _p) in enumerate(s.transitions)
                   if (can[d][k - 1] if emits and k >= 1 else (not emits and can[d][k]))]
        idx, d = choices[rng.randrange(len(choices))] if len(choices) > 1 else choices[0]
        if emits:
            out.append(tid(state, idx))
            k -= 1
        state = d
    return out


def change_reordering(tm: TransitionModel, tids: list[int]) -> list[int]:
    """`ChangeReorderingOfAlignment`: within each run of one transition state, the first and last
    transition-ids swap (self-loops move from before to after the forward transition or back)."""
    out = list(tids)
    tstate, loop = tm.transition_id_states(), tm.self_loop_mask()
    start, n = 0, len(out)
    while start != n:
        cur = tstate[out[start]]
        start_is_not_loop = not loop[out[start]]
        end = start + 1
        while end != n and tstate[out[end]] == cur:
            if not loop[out[end]]:
                if start_is_not_loop:
                    break
                end += 1
                break
            end += 1
        out[start], out[end - 1] = out[end - 1], out[start]
        start = end
    return out


def _convert_internal(old: TransitionModel, new: TransitionModel, tree: khg.ContextDependency,
                      tids: Sequence[int], shift: int, factor: int, reorder: bool,
                      phone_map: Mapping[int, int] | None, rng: random.Random) -> list[int] | None:
    old_reordered = _is_reordered(old, tids)
    pieces, ok = split_to_phones(old, tids)
    if not ok:
        return None
    phone_of = old.transition_id_phones()
    phones = [int(phone_of[p[0]]) for p in pieces]
    if phone_map is not None:
        try:
            phones = [int(phone_map[p]) for p in phones]
        except KeyError as e:
            raise ChainTopologyError(f"convert-ali: could not map phone {e.args[0]}") from None
    if factor == 1 and old.topology == new.topology:
        lengths = [len(p) for p in pieces]
    else:
        lengths = compute_new_phone_lengths(new.topology, phones, [len(p) for p in pieces], shift, factor)
        if lengths is None:
            return None
    width, central = tree.context_width, tree.central_position
    out: list[int] = []
    for i, piece in enumerate(pieces):
        window = [phones[j] if 0 <= j < len(phones) else 0 for j in range(i - central, i - central + width)]
        phone = phones[i]
        entry = new.topology.entry_for_phone(phone)
        pdfs = []
        for c in range(num_pdf_classes(entry)):
            found, pdf = tree.compute(window, c)
            if not found:
                raise ChainTopologyError(f"convert-ali: tree did not succeed in converting phone window {window}")
            pdfs.append(pdf)
        old_entry = old.topology.entry_for_phone(int(phone_of[piece[0]]))
        if lengths[i] != len(piece) or old_entry != entry:
            new_piece = _random_phone_alignment(new, phone, pdfs, lengths[i], rng)
            if reorder:
                new_piece = change_reordering(new, new_piece)
        else:
            hmm, index = old.transition_id_hmm_states(), old.transition_id_indexes()
            new_piece = []
            for t in piece:
                s = old_entry[hmm[t]]
                ts = new.tuple_to_transition_state(phone, int(hmm[t]), pdfs[s.forward_pdf_class],
                                                   pdfs[s.self_loop_pdf_class])
                new_piece.append(new.pair_to_transition_id(ts, int(index[t])))
            if reorder != old_reordered:
                new_piece = change_reordering(new, new_piece)
        out.extend(new_piece)
    assert len(out) == (len(tids) + shift) // factor
    return out


def convert_alignment(old: TransitionModel, new: TransitionModel, tree: khg.ContextDependency,
                      tids: Sequence[int], frame_subsampling_factor: int = 1, repeat_frames: bool = False,
                      reorder: bool = True, phone_map: Mapping[int, int] | None = None,
                      rng: random.Random | None = None) -> list[int] | None:
    """`ConvertAlignment` (convert-ali): the alignment in `new`'s topology and tree, at 1/f of the
    frame rate ((T + f - 1) // f frames), or with `repeat_frames` the f shifted conversions
    interleaved (T frames). Phones whose length or topology changes get a random path of the new
    length (unique for the chain topology); None where Kaldi fails (no valid phone lengths)."""
    f = frame_subsampling_factor
    if f < 1:
        raise ChainTopologyError(f"--frame-subsampling-factor={f} must be >= 1")
    rng = rng or random.Random(0)
    if not repeat_frames or f == 1:
        return _convert_internal(old, new, tree, tids, f - 1, f, reorder, phone_map, rng)
    shifted = {}
    for shift in range(f - 1, -1, -1):
        got = _convert_internal(old, new, tree, tids, shift, f, reorder, phone_map, rng)
        if got is None:
            return None
        shifted[shift] = got
    out = []
    for i in range(len(tids) // f + len(tids) % f):
        for shift in range(f - 1, -1, -1):
            if i < len(shifted[shift]):
                out.append(shifted[shift][i])
    assert len(out) == len(tids)
    return out


# -- the pip-only tree directory ---------------------------------------------------------------------
def monophone_chain_tree(nonsilence_phones: Sequence[int], silence_phones: Sequence[int],
                         shared_phones: Sequence[Sequence[int]] | None = None
                         ) -> tuple[khg.ContextDependency, TransitionModel]:
    """A monophone tree for the chain topology (as gmm-init-mono makes one, with
    `--shared-phones` = `shared_phones`, e.g. data/lang/phones/sets.int: the phones of a set share
    their pdfs) and its transition model: 2 pdfs (forward, self-loop) per phone or set."""
    topo = chain_topology(nonsilence_phones, silence_phones)
    ktopo = khg_topology(topo)
    counts = ktopo.get_phone_to_num_pdf_classes()
    if shared_phones is None:
        tree = khg.monophone_context_dependency(list(topo.phones), counts)
    else:
        sets = [sorted(int(p) for p in s) for s in shared_phones]
        if sorted(p for s in sets for p in s) != sorted(topo.phones):
            raise ChainTopologyError("shared phones must cover every phone of the topology exactly once")
        tree = khg.monophone_context_dependency_shared(sets, counts)
    tm = from_khg(khg.TransitionModel(tree, ktopo))
    return tree, tm


def _write_gz_alignments(path: str, items: Iterable[tuple[str, Sequence[int]]]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp.ark.", dir=d)
    os.close(fd)
    try:
        write_int_vector_table(f"ark:{tmp}", ((k, np.asarray(v, np.int32)) for k, v in items))
        with open(tmp, "rb") as f:
            data = f.read()
    finally:
        os.unlink(tmp)
    with atomic_path(path) as out, gzip.open(out, "wb", compresslevel=6) as g:
        g.write(data)


def write_chain_tree_dir(out_dir: str, tree: khg.ContextDependency, trans_model: TransitionModel,
                         alignments: Sequence[Mapping[str, Sequence[int]]]) -> None:
    """A tree directory as build_tree.sh leaves it, for our readers: `tree`, `0.trans_mdl` (the
    transition model alone, as `copy-transition-model` writes it), `ali.N.gz` (one per mapping),
    `num_jobs`, `topo` (text)."""
    os.makedirs(out_dir, exist_ok=True)
    write_tree(tree, os.path.join(out_dir, "tree"))
    w = KaldiWriter(binary=True)
    w.header()
    trans_model.write(w)
    write_bytes(os.path.join(out_dir, "0.trans_mdl"), w.getvalue())
    for j, ali in enumerate(alignments, start=1):
        _write_gz_alignments(os.path.join(out_dir, f"ali.{j}.gz"), ali.items())
    write_bytes(os.path.join(out_dir, "num_jobs"), f"{len(alignments)}\n".encode())
    w = KaldiWriter(binary=False)
    trans_model.topology.write(w)
    write_bytes(os.path.join(out_dir, "topo"), w.getvalue())


def build_monophone_chain_tree_dir(gmm_trans_model: TransitionModel,
                                   gmm_alignments: Sequence[Mapping[str, Sequence[int]]],
                                   nonsilence_phones: Sequence[int], silence_phones: Sequence[int],
                                   out_dir: str, frame_subsampling_factor: int = 3,
                                   shared_phones: Sequence[Sequence[int]] | None = None) -> ChainTreeDir:
    """build_tree.sh without Kaldi, with a monophone tree: the chain topology, its tree and
    transition model, the GMM alignments (one mapping per job) converted with convert-ali
    --frame-subsampling-factor; utterances convert-ali fails on are left out, as Kaldi does."""
    tree, tm = monophone_chain_tree(nonsilence_phones, silence_phones, shared_phones)
    converted = []
    for ali in gmm_alignments:
        job = {}
        for key, tids in ali.items():
            new = convert_alignment(gmm_trans_model, tm, tree, tids, frame_subsampling_factor)
            if new is not None:
                job[key] = new
        converted.append(job)
    write_chain_tree_dir(out_dir, tree, tm, converted)
    return read_chain_tree_dir(out_dir)


__all__ = ["ChainTopologyError", "ChainTreeDir", "build_monophone_chain_tree_dir", "chain_topology",
           "change_reordering", "compute_new_phone_lengths", "convert_alignment", "gen_topo",
           "is_chain_topology", "min_length", "monophone_chain_tree", "phones_with_lengths",
           "read_chain_tree_dir", "split_to_phones", "write_chain_tree_dir"]


if __name__ == "__main__":
    raise SystemExit(gen_topo_main())
