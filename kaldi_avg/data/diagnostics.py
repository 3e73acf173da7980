"""Fixed chunk subsets for diagnostics, like Kaldi's valid_diagnostic.egs /
train_diagnostic.egs (and combine.egs): every utterance of the subset cut into chunks exactly
as for training, `nnet3-subset-egs --n=num_frames/principal_width` random chunks kept, merged
with `--minibatch-size=1:64` so no chunk is discarded.  The same chunks every iteration, so
the objectives are comparable; collated minibatches are kept after the first pass.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from .chunking import ChunkConfig, chunks_for_utterance
from .collate import Minibatch
from .loading import load_planned
from .merging import MinibatchSizeRule, merge_into_minibatches
from .report import SkipReport
from .seeding import make_rng
from .source import UtteranceSource


class DiagnosticSet:
    """Iterates a fixed set of minibatches covering `utterances` (compute_prob_valid/train;
    `num_frames=60000` gives the combine set, `num_frames=None` keeps every chunk)."""

    def __init__(self, source: UtteranceSource, utterances: Sequence[str],
                 chunk_config: ChunkConfig, *, num_frames: int | None = 10000,
                 minibatch_size: str = "1:64", srand: int = 0, name: str = "diagnostic",
                 report: SkipReport | None = None):
        self._source = source
        self.name = name
        self.report = report if report is not None else SkipReport()
        chunks = [(utt, chunk) for utt in sorted(utterances)
                  for chunk in chunks_for_utterance(utt, int(source.lengths[utt]),
                                                    chunk_config, srand)]
        if num_frames is not None:
            keep = num_frames // chunk_config.principal_width
            if keep < len(chunks):
                picked = make_rng(srand, "subset", name).sample(range(len(chunks)), keep)
                chunks = [chunks[i] for i in sorted(picked)]
        self._plan, discarded = merge_into_minibatches(
            chunks, MinibatchSizeRule.parse(minibatch_size),
            structure=lambda item: item[1].structure, eg_size=lambda item: item[1].input_length)
        for utt, chunk in discarded:
            self.report.add("partial_minibatch", f"{utt}-{chunk.first_frame}", chunk.width)
        self._cached: list[Minibatch] | None = None

    def __len__(self) -> int:
        return len(self._plan)

    @property
    def num_chunks(self) -> int:
        return sum(len(minibatch) for minibatch in self._plan)

    def __iter__(self) -> Iterator[Minibatch]:
        if self._cached is not None:
            yield from self._cached
            return
        produced = []
        for minibatch in load_planned(self._source, self._plan, 0, self.report):
            produced.append(minibatch)
            yield minibatch
        self._cached = produced
