"""The training data pipeline: Kaldi egs semantics (chunking, archives, shuffling, minibatch
merging) computed from features and alignments directly, rank-aware and prefetched.

Typical use by a rank (job j of iteration i):

    usable = screen_utterances(source, chunk_config, report=corpus_report)
    plan = plan_archives(usable, samples_per_iter=..., principal_chunk_width=..., srand=...)
    stream = MinibatchStream.for_job(source, plan, chunk_config, "128,64", job=j,
                                     iteration=i, archives_processed=p, srand=srand)
    with Prefetcher(stream, device=device) as batches:
        for mb in batches: ...
"""
from .archives import ArchivePlan, archive_for_job, num_archives, plan_archives, select_heldout
from .checks import (
                     InputError,
                     NumFrames,
                     OnlineIvectors,
                     ScpCheck,
                     check_alignments,
                     check_features,
                     check_ivectors,
                     check_matrix_scp,
                     check_minibatches,
                     check_tree,
                     read_ivector_dir,
)
from .chunking import Chunk, ChunkConfig, chunks_for_utterance, parse_chunk_widths, split_utterance
from .collate import Minibatch, collate
from .corpus import build_source
from .diagnostics import DiagnosticSet
from .merging import MinibatchSizeRule, halve_minibatch_size, merge_into_minibatches
from .prefetch import Prefetcher
from .report import REASON_INFO, REASONS, DataError, SkipReport
from .source import LoadedUtterance, UtteranceSource, load_utterance, screen_utterances
from .stream import MinibatchStream, plan_minibatches

__all__ = [
    "ArchivePlan", "archive_for_job", "num_archives", "plan_archives", "select_heldout",
    "InputError", "NumFrames", "OnlineIvectors", "ScpCheck", "check_alignments", "check_features", "check_ivectors",
    "check_matrix_scp", "check_minibatches", "check_tree", "read_ivector_dir",
    "Chunk", "ChunkConfig", "chunks_for_utterance", "parse_chunk_widths", "split_utterance",
    "Minibatch", "collate", "build_source", "DiagnosticSet",
    "MinibatchSizeRule", "halve_minibatch_size", "merge_into_minibatches",
    "Prefetcher", "REASON_INFO", "REASONS", "DataError", "SkipReport",
    "LoadedUtterance", "UtteranceSource", "load_utterance", "screen_utterances",
    "MinibatchStream", "plan_minibatches",
]
