"""MinibatchStream: coverage, determinism, one read per utterance, exact resume, bad data."""
import numpy as np

from kaldi_avg.data import (
    ChunkConfig,
    MinibatchStream,
    archive_for_job,
    chunks_for_utterance,
    plan_archives,
)

from .synthetic import corpus_lengths, make_source

CONFIG = ChunkConfig((20, 10), left_context=6, right_context=2, left_context_initial=0,
                     right_context_final=0)


def stream(source, utts, *, iteration=0, minibatch_size="8", **kwargs):
    kwargs.setdefault("shuffle_buffer_size", 30)
    return MinibatchStream(source, utts, CONFIG, minibatch_size, archive=1,
                           iteration=iteration, srand=3, **kwargs)


def keys(minibatches):
    return [mb.keys for mb in minibatches]


def test_pass_covers_every_chunk_once_in_equal_structure_minibatches():
    lengths = corpus_lengths(20, seed=5)
    source = make_source(lengths)
    s = stream(source, list(lengths), minibatch_size="8,4")
    minibatches = list(s)
    seen = [key for mb in minibatches for key in mb.keys]
    chunks = [(u, c) for u, n in lengths.items()
              for c in chunks_for_utterance(u, n, CONFIG, srand=3)]
    expected = {f"{u}-{c.first_frame}" for u, c in chunks}
    discarded = s.report.total("partial_minibatch")
    assert len(seen) == len(set(seen)) == len(expected) - discarded
    # fewer than the smallest allowed size are left over per chunk structure
    assert set(seen) <= expected and discarded < 4 * len({c.structure for _, c in chunks})
    for mb in minibatches:
        assert mb.num_chunks in (8, 4)
        width = mb.targets.shape[1]
        assert mb.features.shape == (mb.num_chunks, mb.left_context + width + mb.right_context, 3)
        assert mb.weights.shape == mb.targets.shape
    assert [mb.position for mb in minibatches] == list(range(1, len(s) + 1))
    used = {key.rsplit("-", 1)[0] for key in seen}
    assert dict(source.load_features.calls) == {u: 1 for u in used}  # each read once


def test_order_is_deterministic_and_reshuffled_per_iteration():
    lengths = corpus_lengths(20, seed=6)
    source = make_source(lengths)
    first = keys(stream(source, list(lengths), minibatch_size="1:8"))
    assert keys(stream(source, list(reversed(list(lengths))), minibatch_size="1:8")) == first
    other = keys(stream(source, list(lengths), iteration=1, minibatch_size="1:8"))
    assert other != first
    assert sorted(k for mb in other for k in mb) == sorted(k for mb in first for k in mb)


def test_for_job_reads_the_archive_kaldi_assigns():
    lengths = corpus_lengths(30, seed=10)
    source = make_source(lengths)
    plan = plan_archives(lengths, samples_per_iter=20, principal_chunk_width=20, num_utts_subset=2)
    assert plan.num_archives >= 3
    for job in range(3):
        s = MinibatchStream.for_job(source, plan, CONFIG, "1:8", job=job, iteration=4,
                                    archives_processed=5)
        archive = archive_for_job(job, 5, plan.num_archives)
        assert s.archive == archive
        assert {k.rsplit("-", 1)[0] for mb in s for k in mb.keys} == set(plan.archives[archive])


def test_utterance_with_bad_features_is_left_out_and_reported():
    lengths = corpus_lengths(12, seed=11)
    bad_utt = sorted(lengths)[3]
    bad = np.full((lengths[bad_utt], 3), np.inf, np.float32)
    source = make_source(lengths, features={bad_utt: bad})
    s = stream(source, list(lengths), minibatch_size="1:8")
    seen = [k for mb in s for k in mb.keys]
    assert not any(k.startswith(bad_utt + "-") for k in seen)
    assert s.report.counts == {"non_finite_features": 1}
    good_chunks = sum(len(chunks_for_utterance(u, n, CONFIG, 3)) for u, n in lengths.items()
                      if u != bad_utt)
    assert len(seen) == good_chunks


def test_ivectors_travel_with_the_chunks():
    lengths = corpus_lengths(6, seed=12)
    source = make_source(lengths, ivector_dim=4, ivector_period=10)
    for mb in stream(source, list(lengths), minibatch_size="1:8"):
        assert mb.ivectors.shape == (mb.num_chunks, 4)
