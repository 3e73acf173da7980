"""Fixed chunk subsets for diagnostics, like Kaldi's valid_diagnostic.egs /
train_diagnostic.egs (and combine.egs): every utterance of the subset cut into chunks exactly
as for training, `nnet3-subset-egs --n=num_frames/principal_width` random chunks kept, merged
with `--minibatch-size=1:64` so no chunk is discarded.  The same chunks every iteration, so
the objectives are comparable; collated minibatches are kept after the first pass, and from the
second pass on each carries a `ForwardCache` (what the network computes from the minibatch alone,
such as its LDA, is computed once; FORWARD_CACHE_BYTES per set).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from .chunking import ChunkConfig, chunks_for_utterance
from .collate import Minibatch
from .loading import load_planned
from .merging import MinibatchSizeRule, merge_into_minibatches
from .report import SkipReport
from .seeding import make_rng
from .source import UtteranceSource

# What the minibatches of one set may keep of the values computed from them (model/graph.py).
FORWARD_CACHE_BYTES = 256 << 20


class ForwardCache(dict):
    """One minibatch's cache for model/graph.py: an entry is kept while the set's shared `budget`
    (a one-element list of bytes left) allows; one over it is not kept (computed again next time)."""

    def __init__(self, budget: list[int]):
        super().__init__()
        self._budget = budget

    def __setitem__(self, key, value) -> None:
        size = _nbytes(value)
        old = _nbytes(self[key]) if key in self else 0
        if size - old > self._budget[0]:
            return
        self._budget[0] -= size - old
        super().__setitem__(key, value)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    return 0


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
        self._cache_budget = [FORWARD_CACHE_BYTES]

    def __len__(self) -> int:
        return len(self._plan)

    @property
    def num_chunks(self) -> int:
        return sum(len(minibatch) for minibatch in self._plan)

    def load(self, indices: Sequence[int]) -> Iterator[tuple[int, Minibatch]]:
        """(index, minibatch) of the planned minibatches `indices` (increasing) that load, without
        keeping them: a rank's share of a set that is read once (the prior subsets)."""
        for minibatch in load_planned(self._source, [self._plan[i] for i in indices], 0, self.report):
            yield indices[minibatch.position - 1], minibatch

    def __iter__(self) -> Iterator[Minibatch]:
        if self._cached is not None:
            yield from self._cached
            return
        produced = []
        for minibatch in load_planned(self._source, self._plan, 0, self.report):
            produced.append(minibatch)
            yield minibatch
        # a set read once (priors, LDA) never fills a cache
        self._cached = [replace(mb, cache=ForwardCache(self._cache_budget)) for mb in produced]
