"""Loading the utterances a minibatch plan needs, each once per pass, and collating."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from .chunking import Chunk
from .collate import Minibatch, collate
from .report import SkipReport
from .source import LoadedUtterance, UtteranceSource, load_utterance

PlannedMinibatch = Sequence[tuple[str, Chunk]]


def load_planned(source: UtteranceSource, plan: Sequence[PlannedMinibatch], start: int,
                 report: SkipReport) -> Iterator[Minibatch]:
    """Collated minibatches plan[start:], in order.

    An utterance is loaded when a minibatch first needs it and released after the last
    minibatch that does, so memory holds only the utterances of chunks still pending.  The
    chunks of an utterance that fails to load are left out of their minibatches (the
    utterance is recorded in `report`); a minibatch left empty is not yielded.
    """
    last_use: dict[str, int] = {}
    for index in range(start, len(plan)):
        for utt, _ in plan[index]:
            last_use[utt] = index
    loaded: dict[str, LoadedUtterance | None] = {}
    for index in range(start, len(plan)):
        items = []
        for utt, chunk in plan[index]:
            if utt not in loaded:
                loaded[utt] = load_utterance(source, utt, report)
            if loaded[utt] is not None:
                items.append((utt, chunk, loaded[utt]))
        for utt, _ in plan[index]:
            if last_use.get(utt) == index:
                del last_use[utt]
                del loaded[utt]
        if items:
            yield collate(items, source.ivector_period, position=index + 1, labels=source.labels)
