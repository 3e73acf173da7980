"""The chain topology (gen_topo.py), chain tree directories and convert-ali, against Kaldi's FSDD
chain fixture (tests/chain/__init__.py) and hand-worked cases."""
from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest

from kaldi_avg.chain.phone_lattice import phone_align_lattice
from kaldi_avg.chain.topology import (
    ChainTopologyError,
    build_monophone_chain_tree_dir,
    chain_topology,
    change_reordering,
    compute_new_phone_lengths,
    convert_alignment,
    gen_topo,
    is_chain_topology,
    min_length,
    monophone_chain_tree,
    phones_with_lengths,
    read_chain_tree_dir,
    split_to_phones,
)
from kaldi_avg.frontend.hmm import read_tree
from kaldi_avg.kaldi.binary import KaldiFormatError
from kaldi_avg.kaldi.lattice import read_compact_lattices
from kaldi_avg.kaldi.transition import read_transition_model

from . import fixture

SILENCE = [1, 2]                    # SIL SPN (fixture phones.txt)
NONSILENCE = list(range(3, 22))     # AH .. Z


@pytest.fixture(scope="module")
def models():
    return (read_transition_model(fixture("lat_trans.mdl")), read_transition_model(fixture("0.trans_mdl")),
            read_tree(fixture("tree")))


def lattice_paths(old) -> dict[str, list[int]]:
    """One whole path (the last arc out of every state) of each fixture lattice after
    lattice-align-phones: a tri1 alignment of the utterance."""
    out = {}
    for key, lat in read_compact_lattices(fixture("lat.20utt.txt")):
        aligned, ok = phone_align_lattice(lat, old)
        assert ok
        s, tids = aligned.start, []
        while aligned.arcs[s]:
            _, w, s = aligned.arcs[s][-1]
            tids += w[2]
        out[key] = tids
    return out


def test_gen_topo_is_kaldis_topo_for_the_fsdd_phones():
    with open(fixture("topo")) as f:
        assert gen_topo(NONSILENCE, SILENCE) == f.read()


def test_gen_topo_command_prints_it():
    out = subprocess.run([sys.executable, "-m", "kaldi_avg.chain.topology", "3:4:5", "1:2"],
                         capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[3] == "1 2 3 4 5"     # silence first, as gen_topo.py
    bad = subprocess.run([sys.executable, "-m", "kaldi_avg.chain.topology", "3:x", "1"], capture_output=True,
                         text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1


def test_the_chain_transition_model_has_the_gen_topo_topology(models):
    old, new, tree = models
    assert new.topology == chain_topology(NONSILENCE, SILENCE)
    assert is_chain_topology(new.topology) and not is_chain_topology(old.topology)
    assert min_length(new.topology.entry_for_phone(5)) == 1
    assert min_length(old.topology.entry_for_phone(5)) == 3       # tri1: 3 emitting states
    assert min_length(old.topology.entry_for_phone(1)) == 3       # silence: 0 -> 3 -> 4 -> final


def test_transition_id_queries_are_kaldis(models):
    old, new, _ = models
    # chain: every transition state has (self-loop, forward-to-final), in that topology order
    assert new.num_transition_ids == 2 * len(new.tuples) == 72
    assert new.self_loop_mask()[1::2].all() and not new.self_loop_mask()[2::2].any()
    assert new.final_mask()[2::2].all() and not new.final_mask()[1::2].any()
    for tid in (1, 2, 37, 72):
        ts, idx = new.transition_id_states()[tid], new.transition_id_indexes()[tid]
        phone, hmm, fpdf, slpdf = new.tuples[ts - 1]
        assert new.transition_id_phones()[tid] == phone and new.transition_id_hmm_states()[tid] == hmm
        assert new.tuple_to_transition_state(phone, hmm, fpdf, slpdf) == ts
        assert new.pair_to_transition_id(ts, idx) == tid
        assert new.transition_id_to_pdf_array()[tid] == (slpdf if idx == 0 else fpdf)
    # tri1: the final transitions leave the last emitting state (2 for phones, 4 for silence)
    finals = np.flatnonzero(old.final_mask())
    assert sorted(set(old.transition_id_hmm_states()[finals].tolist())) == [2, 4]
    assert all(old.transition_id_phones()[t] > 0 for t in finals)
    with pytest.raises(KaldiFormatError):
        new.tuple_to_transition_state(3, 0, 63, 63)
    with pytest.raises(KaldiFormatError):
        new.pair_to_transition_id(1, 2)
    with pytest.raises(KaldiFormatError):
        new.pair_to_transition_id(0, 0)


def test_ali_to_phones_with_lengths_by_hand(models):
    old, _, _ = models
    tids = lattice_paths(old)["george-0-00"]
    # the path's arcs: SIL 3_12_18 (3 frames), Z 11 frames, IH 7, R 4, OW 3 (see lat.20utt.txt)
    assert phones_with_lengths(old, tids) == [(1, 3), (21, 11), (9, 7), (14, 4), (13, 3)]
    pieces, ok = split_to_phones(old, tids)
    assert ok and [len(p) for p in pieces] == [3, 11, 7, 4, 3]
    with pytest.raises(ChainTopologyError):
        phones_with_lengths(old, tids[1:])        # starts inside a phone


def test_new_phone_lengths_by_hand(models):
    old, new, _ = models
    # boundaries 0 3 14 21 25 28 -> (b + 2) // 3 = 0 1 5 7 9 10
    assert compute_new_phone_lengths(new.topology, [1, 21, 9, 14, 13], [3, 11, 7, 4, 3], 2, 3) == [1, 4, 2, 2, 1]
    # boundaries 0 1 2 9 -> 0 1 1 3: the middle phone gets 0 frames and borrows one from the left
    # neighbour (equal distance 0 both ways: the left one wins), which still has 1 = its minimum...
    assert compute_new_phone_lengths(new.topology, [3, 4, 5], [1, 1, 7], 2, 3) == [1, 1, 1]
    # a 3-state topology needs 3 frames per phone: 9 frames at f=3 give 3 output frames for 2 phones
    assert compute_new_phone_lengths(old.topology, [3, 4], [4, 5], 2, 3) is None


def test_change_reordering_swaps_each_run():
    _, new = monophone_chain_tree(NONSILENCE, SILENCE)
    loop, fwd = 1, 2                     # transition state 1: tid 1 self-loop, tid 2 forward
    assert change_reordering(new, [loop, loop, fwd]) == [fwd, loop, loop]
    assert change_reordering(new, [fwd, loop, loop]) == [loop, loop, fwd]
    assert change_reordering(new, [fwd, fwd]) == [fwd, fwd]


def test_convert_ali_to_the_chain_tree_with_subsampling(models):
    old, new, tree = models
    for key, tids in lattice_paths(old).items():
        conv = convert_alignment(old, new, tree, tids, frame_subsampling_factor=3)
        assert len(conv) == (len(tids) + 2) // 3, key
        got = phones_with_lengths(new, conv, key)
        want = phones_with_lengths(old, tids)
        assert [p for p, _ in got] == [p for p, _ in want]
        assert [n for _, n in got] == compute_new_phone_lengths(new.topology, [p for p, _ in want],
                                                                [n for _, n in want], 2, 3)
        # reordered chain alignment: each phone is its forward transition-id then self-loops,
        # whose pdfs are what the biphone tree gives for (previous phone, phone)
        t, prev = 0, 0
        for phone, n in got:
            assert not new.self_loop_mask()[conv[t]] and new.self_loop_mask()[conv[t + 1:t + n]].all()
            pdf = new.transition_id_to_pdf_array()
            assert pdf[conv[t]] == tree.compute([prev, phone], 0)[1]
            assert all(pdf[x] == tree.compute([prev, phone], 1)[1] for x in conv[t + 1:t + n])
            t, prev = t + n, phone
    tids = lattice_paths(old)["george-0-00"]
    rep = convert_alignment(old, new, tree, tids, 3, repeat_frames=True)
    assert len(rep) == len(tids)
    # frames 0, 3, 6, ... of the repeated alignment are the conversion with shift f - 1 (the plain one)
    plain = convert_alignment(old, new, tree, tids, 3)
    assert rep[0::3] == plain


def test_monophone_chain_tree():
    tree, tm = monophone_chain_tree(NONSILENCE, SILENCE)
    assert (tree.context_width, tree.central_position, tree.num_pdfs) == (1, 0, 42)
    assert tm.topology == chain_topology(NONSILENCE, SILENCE) and tm.num_pdfs == 42 and tm.num_transition_ids == 42
    assert is_chain_topology(tm.topology)
    shared, tm2 = monophone_chain_tree(NONSILENCE, SILENCE, [[1, 2]] + [[p] for p in NONSILENCE])
    assert shared.num_pdfs == 40
    assert tm2.transition_id_to_pdf_array()[1] == tm2.transition_id_to_pdf_array()[3]   # SIL, SPN share
    with pytest.raises(ChainTopologyError):
        monophone_chain_tree(NONSILENCE, SILENCE, [[1]])


def test_pip_only_tree_dir_round_trip(models, tmp_path):
    old, _, _ = models
    paths = lattice_paths(old)
    keys = sorted(paths)
    jobs = [{k: paths[k] for k in keys[:10]}, {k: paths[k] for k in keys[10:]}]
    d = build_monophone_chain_tree_dir(old, jobs, NONSILENCE, SILENCE, str(tmp_path / "tree"), 3)
    assert sorted(os.listdir(d.path)) == ["0.trans_mdl", "ali.1.gz", "ali.2.gz", "num_jobs", "topo", "tree"]
    with open(tmp_path / "tree" / "topo") as f:
        assert chain_topology(NONSILENCE, SILENCE) == read_chain_tree_dir(d.path, False).trans_model.topology
        assert f.read().startswith("<Topology>")
    assert d.num_pdfs == 42 and len(d.alignments) == 20
    for k in keys:
        assert len(d.alignments[k]) == (len(paths[k]) + 2) // 3
        assert d.phone_sequences()[k] == [p for p, _ in phones_with_lengths(old, paths[k])]
    d.khg_trans_model()      # the model matches the tree


def test_tree_dir_of_kaldis_files(models, tmp_path):
    old, new, tree = models
    shutil.copy(fixture("tree"), tmp_path / "tree")
    shutil.copy(fixture("0.trans_mdl"), tmp_path / "final.mdl")
    paths = lattice_paths(old)
    conv = {k: convert_alignment(old, new, tree, v, 3) for k, v in paths.items()}
    from kaldi_avg.chain.topology import _write_gz_alignments
    _write_gz_alignments(str(tmp_path / "ali.1.gz"), conv.items())
    (tmp_path / "num_jobs").write_text("1\n")
    d = read_chain_tree_dir(str(tmp_path))
    assert d.num_pdfs == 64 and d.alignments.keys() == conv.keys()
    assert all(d.alignments[k].tolist() == conv[k] for k in conv)
    with gzip.open(tmp_path / "ali.1.gz") as f:
        assert f.read(11) == b"george-0-00"
    # a GMM model with the 3-state topology is not a chain tree dir's
    shutil.copy(fixture("lat_trans.mdl"), tmp_path / "final.mdl")
    with pytest.raises(ChainTopologyError, match="not the chain one"):
        read_chain_tree_dir(str(tmp_path))
    os.unlink(tmp_path / "final.mdl")
    with pytest.raises(ChainTopologyError, match="neither"):
        read_chain_tree_dir(str(tmp_path))


def test_random_paths_for_a_multi_state_topology(models):
    """convert-ali into a 3-state topology with a length change draws one of the paths of that
    length (here 4 frames through 3 states: one state repeats, 3 choices)."""
    old, _, _ = models
    from kaldi_avg.chain.topology import _random_phone_alignment
    seen = set()
    for seed in range(40):
        path = _random_phone_alignment(old, 5, _pdfs(old, 5), 4, random.Random(seed))
        assert len(path) == 4
        assert old.transition_id_hmm_states()[path].tolist() in ([0, 0, 1, 2], [0, 1, 1, 2], [0, 1, 2, 2])
        seen.add(tuple(path))
    assert len(seen) == 3


def _pdfs(tm, phone):
    """The pdf of each pdf-class of `phone` in a 3-state model without context (from its tuples)."""
    out = {}
    for p, hmm, fpdf, _ in tm.tuples:
        if p == phone:
            out.setdefault(hmm, fpdf)
    return [out[c] for c in sorted(out)]
