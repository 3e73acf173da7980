"""Diagnostic subsets: whole utterances in training chunks, fixed across iterations."""
from kaldi_avg.data import ChunkConfig, DiagnosticSet, chunks_for_utterance

from .synthetic import corpus_lengths, make_source

CONFIG = ChunkConfig((20,), left_context=6, right_context=0, left_context_initial=0)


def test_covers_each_utterance_in_training_chunks_without_discards():
    lengths = corpus_lengths(10, seed=20)
    source = make_source(lengths)
    diag = DiagnosticSet(source, list(lengths), CONFIG, num_frames=None, srand=1)
    expected = {f"{u}-{c.first_frame}" for u, n in lengths.items()
                for c in chunks_for_utterance(u, n, CONFIG, srand=1)}
    minibatches = list(diag)
    assert {k for mb in minibatches for k in mb.keys} == expected
    assert sum(mb.num_chunks for mb in minibatches) == diag.num_chunks == len(expected)
    assert all(mb.num_chunks <= 64 for mb in minibatches)
    assert diag.report.total() == 0


def test_frame_budget_keeps_a_fixed_random_subset_and_caches_it():
    lengths = corpus_lengths(20, seed=21)
    source = make_source(lengths)
    diag = DiagnosticSet(source, list(lengths), CONFIG, num_frames=400, srand=1, name="valid")
    assert diag.num_chunks == 400 // 20
    first = [mb.keys for mb in diag]
    calls = sum(source.load_features.calls.values())
    assert [mb.keys for mb in diag] == first
    assert sum(source.load_features.calls.values()) == calls  # second pass from memory
    again = DiagnosticSet(source, list(lengths), CONFIG, num_frames=400, srand=1, name="valid")
    assert [mb.keys for mb in again] == first
