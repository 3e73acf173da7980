"""den.fst and normalization.fst (chain-make-den-fst) against Kaldi's for FSDD; the fstext pieces."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from kaldi_avg.chain.den_graph import (
    DenGraphError,
    create_denominator_fst,
    hmm_level_fst,
    initial_probs,
    load_tree_and_transition_model,
    make_den_fst,
    normalization_fst,
    read_fst,
)
from kaldi_avg.chain.fstext import (
    INF,
    K_DELTA,
    Graph,
    minimize_encoded,
    push_special,
    remove_eps_local,
    rm_final_epsilon,
)
from kaldi_avg.chain.make_den_fst import main

from . import fixture, properties_offset, same_file_but_properties

kaldifst = pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_hmm_gmm")


def parts():
    return load_tree_and_transition_model(fixture("tree"), fixture("0.trans_mdl"))


def kaldis(name: str) -> Graph:
    return Graph.from_fst(kaldifst.StdVectorFst.read(fixture(name)))


def test_fsdd_den_and_normalization_fsts_are_kaldis():
    """From Kaldi's tree, 0.trans_mdl and phone_lm.fst: the den.fst Kaldi made (40 states,
    97 arcs) and its normalization.fst, state for state, arc for arc in the same order, with
    bit-identical float weights."""
    den, norm = make_den_fst(parts(), read_fst(fixture("phone_lm.fst")))
    den_g, norm_g = Graph.from_fst(den), Graph.from_fst(norm)
    assert (den_g.num_states, den_g.num_arcs) == (40, 97)
    assert den_g.start == 2 and sum(f != INF for f in den_g.finals) == 13   # den.fstinfo.txt
    assert den_g == kaldis("den.fst")
    assert norm_g == kaldis("normalization.fst")
    # pdf-id 1 is a leaf no alignment uses (Kaldi warned about it too): labels are 1 + the other 63
    assert sorted({a[0] for arcs in den_g.arcs for a in arcs}) == [p + 1 for p in range(64) if p != 1]


def test_command_from_phone_sequences_writes_kaldis_files(tmp_path):
    """The two Kaldi steps, through the command: est-phone-lm, then the directory form of
    make-den-fst.  phone_lm.fst is Kaldi's byte for byte; den.fst and normalization.fst are
    too except the header word in which OpenFst caches the properties it knows (ours knows
    a superset of Kaldi's, all true)."""
    for name in ("tree", "0.trans_mdl"):
        os.symlink(os.path.abspath(fixture(name)), tmp_path / name)
    assert main(["est-phone-lm", "--num-extra-lm-states=2000", "ark,t:" + fixture("phone_sequences.txt"),
                 str(tmp_path / "phone_lm.fst")]) == 0
    out = tmp_path / "out"
    out.mkdir()
    assert main([str(tmp_path), str(out)]) == 0
    assert (tmp_path / "phone_lm.fst").read_bytes() == open(fixture("phone_lm.fst"), "rb").read()
    for name in ("den.fst", "normalization.fst"):
        ours, theirs = (out / name).read_bytes(), open(fixture(name), "rb").read()
        assert same_file_but_properties(ours, theirs), name
        at = properties_offset(theirs)
        ours_props, kaldi_props = (int.from_bytes(b[at:at + 8], "little") for b in (ours, theirs))
        assert ours_props & kaldi_props == kaldi_props


def test_initial_probs_are_a_distribution_over_all_states():
    den = kaldifst.StdVectorFst.read(fixture("den.fst"))
    probs = initial_probs(den)
    assert probs.dtype == np.float32 and probs.shape == (40,)
    assert np.all(probs > 0) and abs(float(probs.sum()) - 1.0) < 1e-5
    # normalization.fst: a new start state with epsilons to every state, every state final; RmEpsilon
    # then drops den's start state (no arcs lead into it): 40 states, the new start last
    norm = Graph.from_fst(normalization_fst(den, probs))
    assert norm.num_states == 40 and norm.start == 39 and norm.finals[:39] == [0.0] * 39
    # (tropical epsilon removal: the new start's final weight is the best of -log(initial prob))
    assert norm.finals[39] == pytest.approx(-math.log(float(probs.max())), abs=1e-6)


def test_phone_lm_with_a_phone_the_model_lacks():
    lm = Graph(0, [INF, 0.0], [[(99, 99, 0.0, 1)], []]).to_fst()
    with pytest.raises(DenGraphError, match="label 99 is not a phone"):
        create_denominator_fst(parts(), lm)


def test_command_errors_are_one_line(tmp_path, capsys):
    cases = [
        ([fixture("phone_lm.fst"), fixture("0.trans_mdl"), fixture("phone_lm.fst"), "a", "b"],
         "not a binary Kaldi tree"),
        ([os.path.dirname(fixture("tree")), str(tmp_path / "missing")], "No such file or directory"),
        (["est-phone-lm", "--ngram-order=1", "ark,t:" + fixture("phone_sequences.txt"), "x"],
         "--ngram-order must be >= 2"),
        (["est-phone-lm", "ark,t:" + str(tmp_path / "none.txt"), "x"], "none.txt"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("WARNING")]
        assert len(lines) == 1 and message in lines[0], lines
    # as a module, where kaldifst would print its own error line for a file that is not an FST
    r = subprocess.run([sys.executable, "-m", "kaldi_avg.chain.make_den_fst", fixture("tree"),
                        fixture("0.trans_mdl"), fixture("tree"), "a", "b"], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=60)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not a binary OpenFst phone LM" in r.stderr


# ---- the fstext pieces kaldifst lacks: each keeps the weighted language (tropical semiring)

def language(g: Graph, max_len: int = 5) -> dict:
    """Smallest weight of each label string of up to max_len labels (no epsilon cycles)."""
    best: dict = {}
    frontier = {((), g.start): 0.0} if g.start >= 0 else {}
    for _ in range(4 * max_len + 8):
        nxt: dict = {}
        for (labels, s), w in frontier.items():
            if g.finals[s] != INF:
                best[labels] = min(best.get(labels, INF), w + g.finals[s])
            for i, _, aw, n in g.arcs[s]:
                key = labels + ((i,) if i else ())
                if len(key) <= max_len:
                    nxt[key, n] = min(nxt.get((key, n), INF), w + aw)
        frontier = nxt
    return best


def random_graph(seed: int, num_states: int = 7) -> Graph:
    rng = np.random.default_rng(seed)
    g = Graph()
    for _ in range(num_states):
        g.add_state()
    g.start = 0
    for s in range(num_states):
        if s + 1 < num_states:   # a path through every state: all accessible and coaccessible
            g.arcs[s].append((int(rng.integers(1, 4)),) * 2 + (float(np.float32(rng.uniform(0.1, 2.0))), s + 1))
        for _ in range(int(rng.integers(0, 3))):
            n = int(rng.integers(0, num_states))
            label = int(rng.integers(1, 4))
            if n > s and rng.random() < 0.6:
                label = 0   # epsilons only forwards: no epsilon cycles
            g.arcs[s].append((label, label, float(np.float32(rng.uniform(0.1, 2.0))), n))
        if rng.random() < 0.4 or s == num_states - 1:
            g.finals[s] = float(np.float32(rng.uniform(0.1, 2.0)))
    return g


def assert_same_language(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert abs(a[key] - b[key]) <= tol, key


@pytest.mark.parametrize("seed", range(8))
def test_fstext_pieces_keep_the_weighted_language(seed):
    g = random_graph(seed)
    reference = language(g)
    assert_same_language(language(Graph.from_fst(remove_eps_local(random_graph(seed)))), reference, 1e-5)

    pushed = push_special(g, K_DELTA * 0.01)
    assert_same_language(language(pushed), reference, 1e-4)
    # every state's arcs + final-prob now sum to the same value (finals "go back" to the start)
    sums = [sum(math.exp(-a[2]) for a in arcs) + math.exp(-final) for arcs, final in zip(pushed.arcs, pushed.finals)]
    assert math.log(max(sums) / min(sums)) < 1e-4

    fst = g.to_fst()
    kaldifst.rmepsilon(fst)
    minimized = Graph.from_fst(minimize_encoded(fst, K_DELTA * 10))
    assert_same_language(language(minimized), reference, 6 * K_DELTA * 10)


def test_rm_final_epsilon():
    # 0 -a-> 1 -eps-> 2 (final 0.5, no arcs): 1 becomes final with weight 0.25 + 0.5
    g = Graph(0, [INF, INF, 0.5], [[(1, 1, 1.0, 1)], [(0, 0, 0.25, 2)], []])
    out = Graph.from_fst(rm_final_epsilon(g))
    assert out == Graph(0, [INF, 0.75], [[(1, 1, 1.0, 1)], []])


def test_remove_eps_local_on_the_fsdd_hmm_level_fst():
    """On the graph it is meant for (the phone LM through context and HMMs, an epsilon back to
    the loop state after each phone): fewer epsilons and arcs, the same weighted language."""
    g = hmm_level_fst(parts(), read_fst(fixture("phone_lm.fst")))
    epsilons = sum(a[0] == 0 for arcs in g.arcs for a in arcs)
    reference = language(g, max_len=6)
    out = Graph.from_fst(remove_eps_local(hmm_level_fst(parts(), read_fst(fixture("phone_lm.fst")))))
    assert sum(a[0] == 0 for arcs in out.arcs for a in arcs) < epsilons and out.num_arcs < g.num_arcs
    assert_same_language(language(out, max_len=6), reference, 1e-4)


def test_right_context_takes_the_subsequential_path():
    """Kaldi's tree read as width 3 (central position 1: a right-context slot its questions never
    ask about): the LM gets the subsequential loop, the windows a right phone (0 at the end); the
    den graph accepts the same pdf sequences with the same weights (up to the minimization's
    weight quantization), in the same 40 states."""
    import struct

    import kaldi_hmm_gmm as khg

    from kaldi_avg.chain.den_graph import ChainModelParts
    from kaldi_avg.frontend.hmm import to_khg
    from kaldi_avg.kaldi.transition import read_transition_model
    data = open(fixture("tree"), "rb").read()
    at = data.index(b"ContextDependency ") + len(b"ContextDependency ")
    data = data[:at] + b"\x04" + struct.pack("<i", 3) + data[at + 5:]
    tree = khg.ContextDependency.__new__(khg.ContextDependency)
    tree.__setstate__((np.frombuffer(data[2:], np.int8).tolist(),))
    assert (tree.context_width, tree.central_position) == (3, 1)
    width3 = ChainModelParts(tree, to_khg(read_transition_model(fixture("0.trans_mdl")), tree))
    den = Graph.from_fst(create_denominator_fst(width3, read_fst(fixture("phone_lm.fst"))))
    assert den.num_states == 40
    assert_same_language(language(den, 6), language(kaldis("den.fst"), 6), 2 * 10 * K_DELTA)
