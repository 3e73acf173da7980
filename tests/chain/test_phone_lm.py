"""The phone LM (chain-est-phone-lm) against Kaldi's phone_lm.fst for FSDD, and its pruning."""
from __future__ import annotations

import math
import struct

import pytest

from kaldi_avg.chain.fstext import INF, Graph
from kaldi_avg.chain.make_den_fst import main
from kaldi_avg.chain.phone_lm import LanguageModelEstimator, LanguageModelOptions, PhoneLmError, estimate_phone_lm
from kaldi_avg.kaldi.tables import read_int_vector_table

from . import fixture, properties_offset

kaldifst = pytest.importorskip("kaldifst")


def fixture_sequences() -> list:
    return [seq for _, seq in read_int_vector_table("ark,t:" + fixture("phone_sequences.txt"))]


def test_fsdd_phone_lm_is_kaldis_byte_for_byte(tmp_path):
    """`chain-est-phone-lm --num-extra-lm-states=2000 ark,t:phone_sequences.txt phone_lm.fst`:
    the same file (59 states, 69 arcs, same float weights, same header)."""
    out = tmp_path / "phone_lm.fst"
    assert main(["est-phone-lm", "--num-extra-lm-states=2000", "ark,t:" + fixture("phone_sequences.txt"),
                 str(out)]) == 0
    kaldis = open(fixture("phone_lm.fst"), "rb").read()
    assert out.read_bytes() == kaldis
    g = Graph.from_fst(kaldifst.StdVectorFst.read(str(out)))
    assert (g.num_states, g.num_arcs) == (59, 69)


def test_default_options_do_not_prune_fsdd():
    """FSDD has 59 histories, fewer than 46 basic + 1000 extra states: the default LM is the same."""
    ours = Graph.from_fst(estimate_phone_lm(fixture_sequences()))
    assert ours == Graph.from_fst(kaldifst.StdVectorFst.read(fixture("phone_lm.fst")))


def stochastic_error(g: Graph) -> float:
    return max(abs(sum(math.exp(-a[2]) for a in arcs) + math.exp(-g.finals[s]) - 1.0)
               for s, arcs in enumerate(g.arcs))


@pytest.mark.parametrize("extra, no_prune, expected_states", [(10, 3, 56), (0, 3, 47), (10, 2, 31), (5, 1, 6)])
def test_pruning_reaches_the_target(extra, no_prune, expected_states):
    """With fewer states allowed, histories are backed off until the target
    (histories of length no_prune-1, + extra) is reached; when every remaining state is needed
    for the context of another (no_prune=3, extra=0: target 46) Kaldi stops where the queue
    empties.  Every state stays a distribution; the FST stays deterministic and connected."""
    estimator = LanguageModelEstimator(LanguageModelOptions(num_extra_lm_states=extra, no_prune_ngram_order=no_prune))
    for seq in fixture_sequences():
        estimator.add_counts(seq)
    g = Graph.from_fst(estimator.estimate())
    assert estimator.pruned_from == 59
    assert g.num_states == expected_states
    assert stochastic_error(g) < 1e-6
    for arcs in g.arcs:
        labels = [a[0] for a in arcs]
        assert labels == sorted(set(labels))


def test_full_backoff_is_the_unigram():
    """Bigram histories all backed off into the empty history (no_prune_ngram_order=1, no extra
    states): one state, a self-loop per phone with its relative frequency, end of sentence
    as the final probability -- counted over phones plus one end per sentence."""
    seqs = [[1, 2], [1, 1, 3], [2]]
    lm = estimate_phone_lm(seqs, LanguageModelOptions(ngram_order=2, num_extra_lm_states=0, no_prune_ngram_order=1))
    g = Graph.from_fst(lm)
    total = 6 + 3
    assert g.start == 0 and g.num_states == 1
    assert [(a[0], a[3]) for a in g.arcs[0]] == [(1, 0), (2, 0), (3, 0)]
    for (_, _, weight, _), count in zip(g.arcs[0], [3, 2, 1]):
        assert weight == pytest.approx(-math.log(count / total), abs=1e-6)
    assert g.finals[0] == pytest.approx(-math.log(3 / total), abs=1e-6)


def test_unpruned_trigram_by_hand():
    """No pruning: states are the histories in the order first seen (BOS = 0 starts each
    sentence); arcs go to the longest existing history; end of sentence is the final-prob."""
    g = Graph.from_fst(estimate_phone_lm([[1, 2], [1, 3]], LanguageModelOptions(ngram_order=3)))
    # histories in order of creation (none is long enough to need a backoff state):
    # (0,): 1 x2 | (0,1): 2, 3 | (1,2): end | (1,3): end   [(0,1,2) -> (1,2), (0,1,3) -> (1,3)]
    assert g.num_states == 4 and g.start == 0
    assert g.arcs[0] == [(1, 1, 0.0, 1)]
    assert [(a[0], a[3]) for a in g.arcs[1]] == [(2, 2), (3, 3)]
    assert g.arcs[1][0][2] == pytest.approx(math.log(2), abs=1e-6)
    assert g.finals[:2] == [INF, INF] and g.finals[2:] == [0.0, 0.0]


def test_bad_options_and_input():
    with pytest.raises(PhoneLmError, match="ngram-order"):
        LanguageModelOptions(ngram_order=1)
    with pytest.raises(PhoneLmError, match="no-prune-ngram-order"):
        LanguageModelOptions(ngram_order=2, no_prune_ngram_order=3)
    with pytest.raises(PhoneLmError, match="positive phone"):
        estimate_phone_lm([[1, 0, 2]])
    with pytest.raises(PhoneLmError, match="no phone sequences"):
        estimate_phone_lm([])


def test_header_is_openfst_vector_standard():
    data = open(fixture("phone_lm.fst"), "rb").read()
    assert struct.unpack_from("<i", data, 0)[0] == 2125659606
    assert properties_offset(data) == 4 + 4 + 6 + 4 + 8 + 4 + 4
