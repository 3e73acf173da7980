"""steps/align_fmllr_lats.sh without Kaldi (kaldi_avg/frontend/align_lats.py) and the phone-level
lattice determinization under it (kaldi_avg/frontend/determinize.py): the determinization against
brute force on random lattices; the script on the shared FSDD monophone GMM system, its lattices
read by the chain side (read_compact_lattices, lattice-align-phones, chain supervisions through
`python -m kaldi_avg.chain.prepare --lat-dir`)."""
from __future__ import annotations

import random

import pytest

from kaldi_avg.chain.topology import monophone_chain_tree
from kaldi_avg.frontend.align_lats import main, parse_scale_opts
from kaldi_avg.frontend.determinize import (
    DeterminizeError,
    RawLattice,
    best_path,
    determinize_lattice_phone,
)
from kaldi_avg.kaldi.alignment import read_transition_ids
from kaldi_avg.kaldi.lattice import ONE, CompactLattice, compare, read_compact_lattices, times

INF_BEAM = 1e30


@pytest.fixture(scope="module")
def chain_tm():
    """A transition model whose forward transition-ids start phones (chain topology, 5 phones)."""
    return monophone_chain_tree([3, 4, 5], [1, 2])[1]


def random_lattice(rng: random.Random, num_tids: int) -> RawLattice:
    """A time-layered acyclic state-level lattice: emitting arcs to the next frame, epsilon arcs
    (transition-id 0) to later states of the same frame, words on some arcs, finals at the end."""
    frames = rng.randint(2, 5)
    sizes = [rng.randint(1, 3) for _ in range(frames + 1)]
    ids = {}
    for t in range(frames + 1):
        for k in range(sizes[t]):
            ids[t, k] = len(ids)
    n = len(ids)
    lat = RawLattice(start=0, arcs=[[] for _ in range(n)], finals={})
    for (t, k), s in ids.items():
        if t < frames:
            for _ in range(rng.randint(1, 2)):
                d = ids[t + 1, rng.randrange(sizes[t + 1])]
                lat.arcs[s].append((rng.randint(1, num_tids), rng.choice([0, 0, 0, 7, 8]),
                                    rng.uniform(0, 3), rng.uniform(0, 5), d))
        if k + 1 < sizes[t] and rng.random() < 0.5:
            lat.arcs[s].append((0, rng.choice([0, 0, 9]), rng.uniform(0, 1), 0.0, ids[t, rng.randrange(k + 1, sizes[t])]))
    for k in range(sizes[frames]):
        if k == 0 or rng.random() < 0.5:
            lat.finals[ids[frames, k]] = (rng.uniform(0, 1), 0.0)
    return lat


def raw_paths(lat: RawLattice, tm):
    """Every start-to-final path: (labels as DeterminizeLatticeInsertPhones sees them, weight)."""
    phone, hmm_state, self_loop = tm.transition_id_phones(), tm.transition_id_hmm_states(), tm.self_loop_mask()

    def walk(s, labels, w):
        if s in lat.finals:
            g, a = lat.finals[s]
            yield tuple(labels), times(w, (g, a, ()))
        for tid, word, g, a, d in lat.arcs[s]:
            extra = [word] if word else []
            if s != lat.start and tid and hmm_state[tid] == 0 and not self_loop[tid]:
                extra.append(-int(phone[tid]))
            yield from walk(d, labels + extra, times(w, (g, a, (tid,) if tid else ())))
    yield from walk(lat.start, [], ONE)


def compact_paths(lat: CompactLattice):
    """Every path of a CompactLattice: (words, weight)."""
    def walk(s, words, w):
        if lat.finals[s] is not None:
            yield tuple(words), times(w, lat.finals[s])
        for label, aw, d in lat.arcs[s]:
            yield from walk(d, words + ([label] if label else []), times(w, aw))
    yield from walk(lat.start, [], ONE)


def summary(items):
    return sorted((words, w[2], w[0], w[1]) for words, w in items)


@pytest.mark.parametrize("seed", range(40))
def test_determinization_keeps_the_best_path_of_each_word_and_phone_sequence(chain_tm, seed):
    """Against brute force: the lattice's paths are exactly the best raw path of each distinct
    sequence of words and inserted phone labels (no phone label on the start state's arcs, as in
    Kaldi), with its transition-ids and costs; states are topologically sorted from 0."""
    rng = random.Random(seed)
    raw = random_lattice(rng, chain_tm.num_transition_ids)
    best: dict[tuple, tuple] = {}
    for labels, w in raw_paths(raw, chain_tm):
        if labels not in best or compare(w, best[labels]) > 0:
            best[labels] = w
    if not best:
        with pytest.raises(DeterminizeError):
            determinize_lattice_phone(raw, chain_tm, INF_BEAM)
        return
    lat = determinize_lattice_phone(raw, chain_tm, INF_BEAM)
    assert lat.start == 0 and lat.is_top_sorted()
    assert all(fw is None or not fw[2] for fw in lat.finals)          # strings live on arcs
    want = summary((tuple(x for x in labels if x > 0), w) for labels, w in best.items())
    got = summary(compact_paths(lat))
    assert [(a, b) for a, b, _, _ in got] == [(a, b) for a, b, _, _ in want]
    for (_, _, g1, a1), (_, _, g2, a2) in zip(got, want):
        assert g1 == pytest.approx(g2, abs=1e-2) and a1 == pytest.approx(a2, abs=1e-2)
    tids, _, w = best_path(lat)
    top = min(best.values(), key=lambda x: x[0] + x[1])
    assert tuple(tids) == top[2] and w[0] + w[1] == pytest.approx(top[0] + top[1], abs=1e-2)


def test_pruning_keeps_paths_within_the_beam(chain_tm):
    """With a beam, the best path of every sequence within the beam of the best is kept (others
    may be, where all their arcs are on paths within the beam, as Kaldi's arc-wise pruning)."""
    for seed in range(40):
        raw = random_lattice(random.Random(seed), chain_tm.num_transition_ids)
        best: dict[tuple, tuple] = {}
        for labels, w in raw_paths(raw, chain_tm):
            if labels not in best or compare(w, best[labels]) > 0:
                best[labels] = w
        if not best:
            continue
        top = min(w[0] + w[1] for w in best.values())
        lat = determinize_lattice_phone(raw, chain_tm, 1.0)
        got = {(words, w[2]) for words, w in compact_paths(lat)}
        groups = {(tuple(x for x in k if x > 0), w[2]): w[0] + w[1] for k, w in best.items()}
        assert {k for k, c in groups.items() if c <= top + 1.0 - 1e-3} <= got <= set(groups)
        assert min(w[0] + w[1] for _, w in compact_paths(lat)) == pytest.approx(top, abs=1e-3)


def test_merges_alignments_of_one_phone_sequence_and_keeps_optional_silence():
    """Hand-made: two alignments of the same phones (the better one stays) and one with a
    leading silence phone (kept as an alternative)."""
    tm = monophone_chain_tree([3], [1])[1]
    phones = tm.transition_id_phones()
    fwd = {int(phones[t]): t for t in range(1, tm.num_transition_ids + 1) if not tm.self_loop_mask()[t]}
    loop = {int(phones[t]): t for t in range(1, tm.num_transition_ids + 1) if tm.self_loop_mask()[t]}
    s1, p3, l3 = fwd[1], fwd[3], loop[3]
    # 0 -eps/word 5-> 1; from 1: three 3-frame paths to final state 9
    raw = RawLattice(start=0, arcs=[[] for _ in range(10)], finals={9: (0.0, 0.0)})
    raw.arcs[0] = [(0, 5, 0.5, 0.0, 1)]
    raw.arcs[1] = [(p3, 0, 0.0, 1.0, 2), (p3, 0, 0.0, 1.5, 4), (s1, 0, 0.0, 1.0, 6)]
    raw.arcs[2] = [(l3, 0, 0.0, 1.0, 3)]
    raw.arcs[3] = [(l3, 0, 0.0, 1.0, 9)]
    raw.arcs[4] = [(l3, 0, 0.0, 1.0, 5)]
    raw.arcs[5] = [(l3, 0, 0.0, 1.0, 9)]
    raw.arcs[6] = [(p3, 0, 0.0, 1.0, 7)]
    raw.arcs[7] = [(l3, 0, 0.0, 1.0, 9)]
    lat = determinize_lattice_phone(raw, tm, INF_BEAM)
    got = sorted((words, w[2], round(w[0] + w[1], 3)) for words, w in compact_paths(lat))
    assert got == sorted([((5,), (p3, l3, l3), 3.5), ((5,), (s1, p3, l3), 3.5)])


def test_scale_opts():
    assert parse_scale_opts("--transition-scale=1.0 --self-loop-scale=0.1") == (1.0, 0.1)
    assert parse_scale_opts("--self-loop-scale 1.0") == (1.0, 1.0)
    with pytest.raises(ValueError, match="unknown option --bogus"):
        parse_scale_opts("--bogus=1")


# -- the script on FSDD -----------------------------------------------------------------------------
def test_align_fmllr_lats_on_the_fsdd_gmm_system(tmp_path, capsys):
    """Every utterance gets a lattice of its own frames whose best path is the Viterbi alignment
    (align_si.sh's, except where its beam of 10 pruned the best path), with the lattice dir's
    files; the chain side reads the lattices and makes a supervision of the right length from
    each (kaldi_avg.chain.prepare --lat-dir, checked as in test_prepare)."""
    from kaldi_avg.chain.prepare import main as prepare_main
    from kaldi_avg.kaldi.datadir import feat_to_len
    from tests.chain.test_prepare import _check_chain_dir
    from tests.frontend.gmm_system import gmm_system
    system = gmm_system()
    lats = tmp_path / "mono_lats"
    assert main(["--nj", "2", "--generate-ali-from-lats", "true", str(system.train), str(system.lang),
                 str(system.mono), str(lats)]) == 0, capsys.readouterr().err
    assert "no fMLLR" in capsys.readouterr().err
    for name in ("lat.1.gz", "lat.2.gz", "ali.1.gz", "final.mdl", "tree", "phones.txt", "log/generate_lattices.1.log"):
        assert (lats / name).is_file(), name
    assert (lats / "num_jobs").read_text() == "2\n"
    assert (lats / "final.mdl").read_bytes() == (system.mono / "final.mdl").read_bytes()
    frames = feat_to_len(str(system.train / "feats.scp"))
    lattices = {k: lat for j in (1, 2) for k, lat in read_compact_lattices(str(lats / f"lat.{j}.gz"))}
    assert sorted(lattices) == sorted(frames)
    viterbi = {**read_transition_ids(str(system.ali / "ali.1.gz")), **read_transition_ids(str(system.ali / "ali.2.gz"))}
    ours = {**read_transition_ids(str(lats / "ali.1.gz")), **read_transition_ids(str(lats / "ali.2.gz"))}
    same = 0
    for key, lat in lattices.items():
        _, length = lat.state_times()
        assert length == frames[key], key
        tids, words, _ = best_path(lat, 0.1)
        assert list(tids) == list(ours[key]) and len(words) == 1, key
        same += list(tids) == list(viterbi[key])
    assert same >= len(lattices) - 3
    assert sum(lat.num_arcs > lat.num_states - 1 for lat in lattices.values()) > len(lattices) // 2  # alternatives
    # the chain side: lattice-align-phones and chain-get-supervision on every lattice
    data = tmp_path / "data"
    data.mkdir()
    for name in ("utt2spk", "spk2utt", "feats.scp", "text"):
        (data / name).write_bytes((system.train / name).read_bytes())
    chain = tmp_path / "chain"
    assert prepare_main(["--lat-dir", str(lats), str(system.lang), str(system.ali), str(data), str(chain)]) == 0
    assert f"{len(frames)} supervisions in 2 archives (0 failed, 0 of the wrong length" in capsys.readouterr().err
    _check_chain_dir(chain, frames, len(frames))


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "d"), str(tmp_path / "l"), str(tmp_path / "s"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("steps/align_fmllr_lats.sh: ") and str(tmp_path) in err[-1]
    assert main(["--scale-opts", "--x=1", "a", "b", "c", "d"]) == 1
    assert "unknown option --x" in capsys.readouterr().err
