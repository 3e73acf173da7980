"""One job's pass over one archive: Kaldi's
`nnet3-copy-egs ark:egs.A.ark | nnet3-shuffle-egs --srand=iter+srand | nnet3-merge-egs`
without the archive file.

The whole pass is planned from utterance lengths alone before any feature is read (which
chunks, in which order, in which minibatch), so it is reproducible and can resume at any
minibatch.  Shuffling: utterances are taken in a seeded random order and the chunks of each
run of utterances holding about `shuffle_buffer_size` chunks are shuffled together (Kaldi's
shuffle buffer, 5000 by default), which keeps the number of utterances held in memory
bounded; the order differs per (srand + iteration, archive), not bit-identical to Kaldi.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from .archives import ArchivePlan, archive_for_job
from .chunking import Chunk, ChunkConfig, chunks_for_utterance
from .collate import Minibatch
from .loading import load_planned
from .merging import MinibatchSizeRule, merge_into_minibatches
from .report import SkipReport
from .seeding import make_rng
from .source import UtteranceSource


def plan_minibatches(utt_lengths: Sequence[tuple[str, int]], config: ChunkConfig,
                     rule: MinibatchSizeRule, *, srand: int, iteration: int, archive: int,
                     shuffle_buffer_size: int = 5000, frame: int | None = None, shift: int = 0
                     ) -> tuple[list[list[tuple[str, Chunk]]], list[tuple[str, Chunk]]]:
    """(minibatches of (utt, chunk), chunks discarded as a partial minibatch) for one pass. `frame`:
    train_dnn.py's frame selection (nnet3-copy-egs --frame), each chunk reduced to that output frame,
    chunks without it left out (they have no such frame: nothing is lost). `shift`: chain/train.py's
    frame shift of every chunk (`Chunk.shift`)."""
    if shuffle_buffer_size <= 0:
        raise ValueError(f"shuffle_buffer_size must be positive, got {shuffle_buffer_size}")
    rng = make_rng(srand + iteration, "shuffle", archive)
    order = sorted(utt_lengths)
    rng.shuffle(order)
    sequence: list[tuple[str, Chunk]] = []
    block: list[tuple[str, Chunk]] = []
    for utt, num_frames in order:
        block.extend((utt, chunk) for chunk in chunks_for_utterance(utt, num_frames, config, srand))
        if len(block) >= shuffle_buffer_size:
            rng.shuffle(block)
            sequence.extend(block)
            block = []
    rng.shuffle(block)
    sequence.extend(block)
    if frame is not None:
        sequence = [(utt, chunk.select_frame(frame)) for utt, chunk in sequence if frame < chunk.width]
    if shift:
        sequence = [(utt, chunk.shifted(shift)) for utt, chunk in sequence]
    return merge_into_minibatches(sequence, rule, structure=lambda item: item[1].structure,
                                  eg_size=lambda item: item[1].input_length)


class MinibatchStream:
    """Iterates the minibatches of one archive for one iteration (a run resumes at iteration
    boundaries, docs/training.md, so a pass always starts at its beginning).

    The pass is planned on first use (iteration, len); chunks left over as a partial minibatch
    are recorded in `report` then, unusable utterances when loaded (by the iterating thread:
    read the report after the pass).
    """

    def __init__(self, source: UtteranceSource, utterances: Sequence[str],
                 chunk_config: ChunkConfig, minibatch_size: str, *, archive: int,
                 iteration: int, srand: int = 0, shuffle_buffer_size: int = 5000,
                 report: SkipReport | None = None, frame: int | None = None, shift: int = 0):
        self._source = source
        self._frame, self._shift = frame, shift
        self.archive, self.iteration, self.srand = archive, iteration, srand
        self.report = report if report is not None else SkipReport()
        self._lengths = [(utt, int(source.lengths[utt])) for utt in utterances]
        self._config, self._shuffle_buffer_size = chunk_config, shuffle_buffer_size
        self._rule = MinibatchSizeRule.parse(minibatch_size)
        # planned on first use, which is usually in the Prefetcher's thread
        self._plan_lock = threading.Lock()
        self._planned: list[list[tuple[str, Chunk]]] | None = None

    @classmethod
    def for_job(cls, source: UtteranceSource, plan: ArchivePlan, chunk_config: ChunkConfig,
                minibatch_size: str, *, job: int, iteration: int, archives_processed: int,
                srand: int = 0, shuffle_buffer_size: int = 5000,
                report: SkipReport | None = None, frame: int | None = None, shift: int = 0) -> MinibatchStream:
        """The stream of 0-based `job` (the rank) in `iteration` (see archive_for_job)."""
        archive = archive_for_job(job, archives_processed, plan.num_archives)
        return cls(source, plan.archives[archive], chunk_config, minibatch_size,
                   archive=archive, iteration=iteration, srand=srand,
                   shuffle_buffer_size=shuffle_buffer_size, report=report, frame=frame, shift=shift)

    @property
    def _plan(self) -> list[list[tuple[str, Chunk]]]:
        with self._plan_lock:
            if self._planned is None:
                self._planned, discarded = plan_minibatches(
                    self._lengths, self._config, self._rule, srand=self.srand,
                    iteration=self.iteration, archive=self.archive,
                    shuffle_buffer_size=self._shuffle_buffer_size, frame=self._frame, shift=self._shift)
                for utt, chunk in discarded:
                    self.report.add("partial_minibatch", f"{utt}-{chunk.first_frame}", chunk.width)
            return self._planned

    def __len__(self) -> int:
        """Planned minibatches in the whole pass (one may be dropped if all its data is bad)."""
        return len(self._plan)

    def __iter__(self) -> Iterator[Minibatch]:
        yield from load_planned(self._source, self._plan, 0, self.report)
