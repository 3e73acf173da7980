"""Chain supervision (chain-get-supervision, lattice-align-phones, the splitting and normalization
of nnet3-chain-get-egs) against Kaldi's FSDD chain fixture (tests/chain/__init__.py) and by hand."""
from __future__ import annotations

import itertools
import math
import random
import struct

import kaldifst
import numpy as np
import pytest

from kaldi_avg.chain.den_graph import load_tree_and_transition_model
from kaldi_avg.chain.phone_lattice import phone_align_lattice
from kaldi_avg.chain.supervision import (
    SupervisionError,
    SupervisionOptions,
    SupervisionSplitter,
    alignment_to_proto_supervision,
    chain_examples,
    get_supervisions,
    phone_lattice_to_proto_supervision,
    supervision_from_lattice,
    supervision_from_phones,
)
from kaldi_avg.chain.supervision_io import SupervisionFst, read_supervisions
from kaldi_avg.data.chunking import ChunkConfig, split_utterance
from kaldi_avg.kaldi.lattice import (
    CompactLattice,
    LatticeError,
    iter_compact_lattices,
    parse_compact_lattice_text,
    read_compact_lattices,
    write_compact_lattice_text,
)
from kaldi_avg.kaldi.transition import read_transition_model

from . import fixture

FIXTURE_OPTS = SupervisionOptions(left_tolerance=5, right_tolerance=5, frame_subsampling_factor=3)
# george-0-00's alignment along one path of its lattice: SIL, Z IH R OW (phone, input frames)
GEORGE_0_00 = [(1, 3), (21, 11), (9, 7), (14, 4), (13, 3)]


@pytest.fixture(scope="module")
def fsdd():
    parts = load_tree_and_transition_model(fixture("tree"), fixture("0.trans_mdl"))
    lat_tm = read_transition_model(fixture("lat_trans.mdl"))
    lats = dict(read_compact_lattices(fixture("lat.20utt.txt")))
    kaldis = dict(read_supervisions(fixture("supervision.20utt.txt")))
    return parts, lat_tm, lats, kaldis


def paths(fst: SupervisionFst) -> list[tuple[tuple[int, ...], float]]:
    """Every path (label sequence, weight) of a small acyclic supervision FST."""
    out_arcs: dict[int, list[int]] = {}
    for k in range(fst.num_arcs):
        out_arcs.setdefault(int(fst.src[k]), []).append(k)
    found = []

    def walk(s, labels, w):
        if math.isfinite(fst.final[s]):
            found.append((tuple(labels), w + float(fst.final[s])))
        for k in out_arcs.get(s, []):
            walk(int(fst.dst[k]), labels + [int(fst.label[k])], w + float(fst.weight[k]))
    walk(0, [], 0.0)
    return found


def num_paths(fst: SupervisionFst) -> int:
    n = np.zeros(fst.num_states)
    n[0] = 1
    for k in np.argsort(fst.src, kind="stable"):     # states are in time order
        n[fst.dst[k]] += n[fst.src[k]]
    return int(n[np.isfinite(fst.final)].sum())


def test_fsdd_supervisions_are_kaldis(fsdd):
    """lattice-align-phones + chain-get-supervision on the 20 tri1 lattices: the same FST as
    Kaldi's, state for state and arc for arc (no canonical reordering needed), and the same
    weight, frames per sequence and label dim."""
    parts, lat_tm, lats, kaldis = fsdd
    assert list(lats) == list(kaldis) and len(lats) == 20
    states = arcs = 0
    for key, lat in lats.items():
        ours, theirs = supervision_from_lattice(parts, lat_tm, lat, FIXTURE_OPTS, key), kaldis[key]
        assert (ours.weight, ours.num_sequences, ours.frames_per_sequence, ours.label_dim) == \
            (theirs.weight, 1, theirs.frames_per_sequence, 64), key
        a, b = ours.fsts[0], theirs.fsts[0]
        assert a.num_states == b.num_states, key
        for name in ("src", "dst", "label", "weight", "final"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (key, name)
        states, arcs = states + a.num_states, arcs + a.num_arcs
    assert (states, arcs) == (1027, 1432)


def test_phone_aligned_lattice_by_hand(fsdd):
    """george-0-00's word lattice: 0 -> 1 (a word, no frames), two arcs 1 -> 2 (the first frames of
    Z, with or without a leading SIL), 2 -> 3 (the rest of Z, then IH R OW) and a final weight on 3.
    Phone-aligned: from the start a Z arc and a SIL arc (then Z), IH, R, OW, each phone's
    transition-ids on its arc, the costs of the word arcs a phone's frames came from added up."""
    _, lat_tm, lats, _ = fsdd
    aligned, ok = phone_align_lattice(lats["george-0-00"], lat_tm)
    assert ok and aligned.start == 0 and aligned.num_states == 6 and aligned.num_arcs == 6
    labels = [[a[0] for a in arcs] for arcs in aligned.arcs]
    assert labels == [[21, 1], [21], [9], [14], [13], []]
    assert [len(a[1][2]) for arcs in aligned.arcs for a in arcs] == [14, 3, 11, 7, 4, 3]
    assert aligned.finals[5] == (0.0, 0.0, ())
    # graph costs: Z without SIL = 0 -> 1 -> 2 -> 3 (0.693359 + 0.537685 + 1.39817), SIL = 0 -> 1 -> 2
    # with SIL (0.693359 + 0.936295), the final weight 0.865707 on OW
    assert aligned.arcs[0][0][1][0] == pytest.approx(0.693359 + 0.537685 + 1.39817, abs=1e-5)
    assert aligned.arcs[0][1][1][0] == pytest.approx(0.693359 + 0.936295, abs=1e-5)
    assert aligned.arcs[4][0][1][0] == pytest.approx(0.865707, abs=1e-6)
    text = write_compact_lattice_text("george-0-00", aligned)
    (key, again), = iter_compact_lattices(text.encode(), "round trip")
    assert key == "george-0-00" and again.arcs == aligned.arcs


def test_equal_phone_arcs_merge_with_the_better_weight():
    """RmEpsilon inside lattice-align-phones merges arcs with the same phone and destination
    (`Plus` of CompactLattice weights keeps the smaller cost): two word arcs with the same
    transition-ids and different costs become one phone arc."""
    tm = read_transition_model(fixture("lat_trans.mdl"))
    phone = "98_97_97_102_101_104"     # one IH (phone 9), reordered
    lat = parse_compact_lattice_text([f"0\t1\t5\t2,1,{phone}", f"0\t1\t6\t1,1,{phone}", "1\t0,0,"])
    aligned, ok = phone_align_lattice(lat, tm)
    assert ok and aligned.num_arcs == 1
    (label, w, _), = aligned.arcs[aligned.start]
    assert label == 9 and w[:2] == (1.0, 1.0) and len(w[2]) == 6


def test_binary_lattice_archive(fsdd, tmp_path):
    """The binary CompactLattice form (OpenFst vector FST, arc type compactlattice44, right after
    the key's space: Kaldi's lattice holders write no `\\0B`) reads as the text one."""
    _, _, lats, _ = fsdd

    def weight(w):
        if w is None:
            return struct.pack("<ffi", math.inf, math.inf, 0)
        return struct.pack("<ffi", w[0], w[1], len(w[2])) + struct.pack(f"<{len(w[2])}i", *w[2])

    def string(s):
        return struct.pack("<i", len(s)) + s

    blob = b""
    for key in ("george-0-00", "george-0-01"):
        lat = lats[key]
        body = b"".join(weight(lat.finals[s]) + struct.pack("<q", len(lat.arcs[s])) +
                        b"".join(struct.pack("<ii", a[0], a[0]) + weight(a[1]) + struct.pack("<i", a[2])
                                 for a in lat.arcs[s]) for s in range(lat.num_states))
        header = (struct.pack("<i", 2125659606) + string(b"vector") + string(b"compactlattice44") +
                  struct.pack("<iiQqqq", 2, 0, 0, lat.start, lat.num_states, lat.num_arcs))
        blob += key.encode() + b" " + header + body
    import gzip
    path = tmp_path / "lat.1.gz"
    path.write_bytes(gzip.compress(blob))
    got = dict(read_compact_lattices(str(path)))
    assert list(got) == ["george-0-00", "george-0-01"]
    for key, lat in got.items():
        assert (lat.start, lat.arcs, lat.finals) == (lats[key].start, lats[key].arcs, lats[key].finals)
    with pytest.raises(LatticeError, match="cut off"):
        list(iter_compact_lattices(blob[:-7], "cut"))


def test_proto_supervision_windows_by_hand():
    """AlignmentToProtoSupervision for GEORGE_0_00 (28 input frames, f = 3, tolerances 5):
    SIL [0,3) -> input window [0,8) -> output frames ceil(0/3)..ceil(8/3)-1 = 0..2;
    Z [3,14) -> [0,19) -> 0..6; IH [14,21) -> [9,26) -> 3..8; R [21,25) -> [16,28) -> 6..9;
    OW [25,28) -> [20,28) -> 7..9."""
    proto = alignment_to_proto_supervision(FIXTURE_OPTS, [p for p, _ in GEORGE_0_00], [n for _, n in GEORGE_0_00])
    windows = {p: [t for t in range(proto.num_frames) if p in proto.allowed_phones[t]] for p, _ in GEORGE_0_00}
    assert proto.num_frames == 10
    assert windows == {1: [0, 1, 2], 21: list(range(7)), 9: list(range(3, 9)), 14: list(range(6, 10)),
                       13: [7, 8, 9]}


def test_number_of_paths_by_hand(fsdd):
    """A path of the supervision is a segmentation of the 10 output frames into SIL Z IH R OW, each
    phone inside its window (test above). With b1 < b2 < b3 < b4 the phone boundaries:
    b1 in {1,2,3} (SIL within 0..2), b2 in 3..7 (Z ends by 6, IH starts at 3), b3 in 6..8
    (IH ends by 8, R starts at 6), b4 in 7..9 (OW starts at 7). Pairs (b3, b4): b3 = 6: 3 b4's,
    7: 2, 8: 1. For b2 = 3 there are 2 b1's (1, 2), for b2 >= 4 three. So
    b3 = 6: b2 in {3,4,5}: 2+3+3 = 8, x3 = 24; b3 = 7: b2 in {3..6}: 11, x2 = 22;
    b3 = 8: b2 in {3..7}: 14, x1 = 14. Total 60."""
    parts = fsdd[0]
    sup = supervision_from_phones(parts, GEORGE_0_00, FIXTURE_OPTS)
    fst = sup.fsts[0]
    assert sup.frames_per_sequence == 10 and num_paths(fst) == 60
    assert len({labels for labels, _ in paths(fst)}) == 60      # and 60 different pdf sequences
    # brute force over the boundaries, as a check of the hand count
    windows = [(0, 3), (0, 7), (3, 9), (6, 10), (7, 10)]
    count = sum(all(windows[i][0] <= b[i] and b[i + 1] <= windows[i][1] for i in range(5))
                for mid in itertools.combinations(range(1, 10), 4) for b in [(0, *mid, 10)])
    assert count == 60
    # without tolerance (f = 1) the alignment is the only path: 28 frames, 28 arcs
    exact = supervision_from_phones(parts, GEORGE_0_00, SupervisionOptions(0, 0, 1)).fsts[0]
    assert num_paths(exact) == 1 and exact.num_arcs == 28


def test_the_alignment_is_one_of_the_lattice_supervisions_paths(fsdd):
    parts, _, _, kaldis = fsdd
    ours = {labels for labels, _ in paths(supervision_from_phones(parts, GEORGE_0_00, FIXTURE_OPTS).fsts[0])}
    kaldi = {labels for labels, _ in paths(kaldis["george-0-00"].fsts[0])}
    assert ours < kaldi


def test_options_and_errors(fsdd):
    parts, lat_tm, lats, _ = fsdd
    with pytest.raises(SupervisionError, match="tolerances"):
        SupervisionOptions(0, 1, 3)
    with pytest.raises(SupervisionError, match="lm-scale"):
        SupervisionOptions(lm_scale=1.0)
    with pytest.raises(SupervisionError, match="too many phones"):      # 5 phones in 1 output frame
        supervision_from_phones(parts, [(1, 1), (21, 1), (9, 1)], SupervisionOptions(1, 1, 3))
    # the raw lattice (word arcs) is not phone-aligned: its final state is not at the last frame
    with pytest.raises(SupervisionError):
        phone_lattice_to_proto_supervision(FIXTURE_OPTS, lats["george-0-00"])
    items = [("good", GEORGE_0_00), ("bad", [(1, 1), (21, 1), (9, 1)]), ("good2", GEORGE_0_00)]
    got = list(get_supervisions(parts, items, SupervisionOptions(1, 1, 3), lattice_input=False))
    assert [k for k, _ in got] == ["good", "good2"]
    with pytest.raises(SupervisionError, match="1 of 2"):      # Kaldi fails unless done > errors
        list(get_supervisions(parts, items[:2], SupervisionOptions(1, 1, 3), lattice_input=False))
    assert [k for k, _ in get_supervisions(parts, list(lats.items())[:2], FIXTURE_OPTS, True, lat_tm)] == \
        ["george-0-00", "george-0-01"]


def test_lm_scale_keeps_the_lattice_costs_relative_to_the_best_path(fsdd):
    """--lm-scale: arc weights are lm_scale x graph cost, pushed so the best path costs 0."""
    _, lat_tm, lats, _ = fsdd
    aligned, _ = phone_align_lattice(lats["george-0-00"], lat_tm)
    proto = phone_lattice_to_proto_supervision(SupervisionOptions(5, 5, 3, lm_scale=0.5), aligned)
    g = {}
    for s in range(proto.fst.num_states):
        g[s] = [(a.ilabel, a.weight.value, a.nextstate) for a in kaldifst.ArcIterator(proto.fst, s)]
    # two paths: SIL Z IH R OW (via state 1) and Z IH R OW; graph costs from the aligned lattice
    costs = {}
    for first in g[proto.fst.start]:
        s, total, labels = first[2], first[1], [first[0]]
        while g[s]:
            lab, w, s = g[s][0]
            total, labels = total + w, labels + [lab]
        costs[tuple(labels)] = total + proto.fst.final(s).value
    raw = {}
    for first in aligned.arcs[aligned.start]:
        s, total, labels = first[2], first[1][0], [first[0]]
        while aligned.arcs[s]:
            lab, w, s = aligned.arcs[s][0]
            total, labels = total + w[0], labels + [lab]
        raw[tuple(labels)] = 0.5 * (total + aligned.finals[s][0])
    best = min(raw.values())
    assert costs.keys() == raw.keys() and min(costs.values()) == pytest.approx(0.0, abs=1e-5)
    for k in raw:
        assert costs[k] == pytest.approx(raw[k] - best, abs=1e-4)


def test_splitter_keeps_exactly_the_windows_of_the_paths(fsdd):
    """GetFrameRange: the chunk's label sequences are the full supervision's sequences cut to the
    chunk's frames, for every chunk position."""
    kaldis = fsdd[3]
    sup = kaldis["george-0-00"]
    full = {labels for labels, _ in paths(sup.fsts[0])}
    splitter = SupervisionSplitter(sup)
    for begin, n in [(0, 4), (3, 5), (6, 4), (0, 10), (9, 1)]:
        part = splitter.get_frame_range(begin, n)
        assert part.frames_per_sequence == n and part.label_dim == 64
        got = {labels for labels, _ in paths(part.fsts[0])}
        assert got == {labels[begin:begin + n] for labels in full}, (begin, n)
    with pytest.raises(SupervisionError):
        splitter.get_frame_range(8, 3)


def test_normalized_chunks_carry_the_normalization_fsts_best_cost(fsdd):
    """AddWeightToSupervisionFst: each label sequence of a chunk costs what its best path through
    normalization.fst costs (initial weight of a den-graph state + arc weights, any state final)."""
    kaldis = fsdd[3]
    norm = kaldifst.StdVectorFst.read(fixture("normalization.fst"))
    sup = kaldis["george-0-01"]
    examples = chain_examples("george-0-01", sup, sup.frames_per_sequence * 3, ChunkConfig((15,), 10, 10), 3, norm)
    assert [e.key for e in examples] == ["george-0-01-0", "george-0-01-12", "george-0-01-27", "george-0-01-42"]
    splitter = SupervisionSplitter(sup)
    for e in examples:
        got = dict(paths(e.supervision.fsts[0]))
        raw = {labels for labels, _ in paths(splitter.get_frame_range(e.chunk.first_frame // 3, 5).fsts[0])}
        assert set(got) == raw
        for labels, cost in got.items():
            linear = kaldifst.make_linear_acceptor(list(labels))
            composed = kaldifst.compose(linear, norm)
            best = kaldifst.shortest_path(composed)
            total = sum(a.weight.value for s in range(best.num_states) for a in kaldifst.ArcIterator(best, s))
            total += sum(best.final(s).value for s in range(best.num_states) if math.isfinite(best.final(s).value))
            assert cost == pytest.approx(total, abs=1e-3)


def test_chain_chunks_by_hand():
    """57 input frames (19 output frames at f = 3), chunks of 15 input frames (5 output): four
    chunks cover 20 output frames, one too many, so one junction overlaps by one output frame
    (3 input frames); deterministic choices put it at the first junction: starts 0, 12, 27, 42.
    The shared output frame 4 has weight 1/2 in both chunks."""
    chunks = split_utterance(57, ChunkConfig((15,), 10, 10, 20, 5, frame_subsampling_factor=3))
    assert [(c.first_frame, c.width) for c in chunks] == [(0, 15), (12, 15), (27, 15), (42, 15)]
    assert [c.weights for c in chunks] == [(1, 1, 1, 1, 0.5), (0.5, 1, 1, 1, 1), (1,) * 5, (1,) * 5]
    assert [(c.left_context, c.right_context) for c in chunks] == [(20, 10), (10, 10), (10, 10), (10, 5)]
    # widths are rounded up to multiples of f (16 -> 18); gaps come in whole output frames
    chunks = split_utterance(60, ChunkConfig((16,), 0, 0, frame_subsampling_factor=3), random.Random(3))
    assert all(c.width == 18 and c.first_frame % 3 == 0 for c in chunks)
    assert split_utterance(10, ChunkConfig((15,), 0, 0, frame_subsampling_factor=3)) == []


def test_deriv_weights_and_length_checks(fsdd):
    kaldis = fsdd[3]
    sup = kaldis["george-0-00"]                # 10 output frames
    cfg = ChunkConfig((15,), 0, 0)
    dw = np.linspace(0.1, 0.9, 9)              # one frame short: within the tolerance, the last frame 0
    ex = chain_examples("u", sup, 30, cfg, 3, None, deriv_weights=dw)
    assert [e.key for e in ex] == ["u-0", "u-15"]
    assert np.allclose(ex[0].deriv_weights, dw[:5]) and np.allclose(ex[1].deriv_weights, [*dw[5:9], 0.0])
    assert chain_examples("u", sup, 30, cfg, 3, None, deriv_weights=dw[:7]) == []    # 3 frames off
    assert chain_examples("u", sup, 36, cfg, 3) == []                                  # 12 vs 10 output frames
    assert len(chain_examples("u", sup, 31, cfg, 3)) == 2                              # 11 vs 10: tolerated


def test_empty_lattice_is_an_error():
    with pytest.raises(SupervisionError, match="empty"):
        phone_lattice_to_proto_supervision(FIXTURE_OPTS, CompactLattice())


def test_pip_only_path_end_to_end(fsdd, tmp_path):
    """No Kaldi binary: tri1 alignments (one path of each lattice) -> monophone chain tree dir
    (convert-ali --frame-subsampling-factor=3) -> phone LM -> den/normalization FSTs ->
    supervision from ali-to-phones --write-lengths of the tri1 alignments -> normalized chunks."""
    from kaldi_avg.chain.den_graph import make_den_fst
    from kaldi_avg.chain.phone_lm import estimate_phone_lm
    from kaldi_avg.chain.topology import build_monophone_chain_tree_dir, phones_with_lengths
    _, lat_tm, lats, _ = fsdd
    alis = {}
    for key, lat in lats.items():
        aligned, _ = phone_align_lattice(lat, lat_tm)
        s, tids = aligned.start, []
        while aligned.arcs[s]:
            _, w, s = aligned.arcs[s][-1]
            tids += w[2]
        alis[key] = tids
    tree_dir = build_monophone_chain_tree_dir(lat_tm, [alis], list(range(3, 22)), [1, 2], str(tmp_path), 3)
    parts = load_tree_and_transition_model(str(tmp_path / "tree"), str(tmp_path / "0.trans_mdl"))
    den, norm = make_den_fst(parts, estimate_phone_lm(tree_dir.phone_sequences().values()))
    assert parts.num_pdfs == 42 and den.num_states > 0
    for key in ("george-0-00", "george-0-05"):
        sup = supervision_from_phones(parts, phones_with_lengths(lat_tm, alis[key]), FIXTURE_OPTS, key)
        assert sup.frames_per_sequence == (len(alis[key]) + 2) // 3 and sup.label_dim == 42
        examples = chain_examples(key, sup, len(alis[key]), ChunkConfig((15,), 0, 0), 3, norm)
        assert examples and all(e.supervision.fsts[0].num_states > 0 for e in examples)
        # every chunk has a path through the den graph: the normalized FSTs have finite costs
        assert all(np.isfinite(e.supervision.fsts[0].final).any() for e in examples)


def test_top_sort_of_an_aligned_lattice_by_hand():
    """TopSortCompactLatticeIfNeeded: 0 -> 2 -> 1 is renumbered by reverse depth-first finishing
    order (finish 1, 2, 0 -> 0, 2, 1 get 0, 1, 2); a top-sorted lattice is left alone."""
    from kaldi_avg.chain.phone_lattice import top_sort_if_needed
    lat = parse_compact_lattice_text(["0\t2\t7\t1,0,5", "2\t1\t8\t2,0,6_6", "1\t0,0,"])
    assert not lat.is_top_sorted()
    top_sort_if_needed(lat)
    assert lat.start == 0 and lat.arcs == [[(7, (1.0, 0.0, (5,)), 1)], [(8, (2.0, 0.0, (6, 6)), 2)], []]
    assert lat.finals == [None, None, (0.0, 0.0, ())]
    before = lat.copy()
    top_sort_if_needed(lat)
    assert lat == before
    assert lat.state_times() == ([0, 1, 3], 3)
