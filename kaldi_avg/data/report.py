"""Accounting for data that the pipeline could not use.

Nothing is dropped silently: every skipped utterance or chunk is counted under a reason, with
its frames and the first few ids, and the reports of several ranks merge into one.  Problems
that mean the inputs are inconsistent as a whole (wrong feature dimension, pdf ids out of
range) raise `DataError` instead, naming the utterance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

# reason -> what it means (the wording used by `SkipReport.summary`)
REASONS = {
    "too_short": "utterance shorter than the smallest chunk width",
    "missing_targets": "no alignment for the utterance",
    "target_length_mismatch": "alignment length differs from the feature length beyond tolerance",
    "targets_padded": "alignment a few frames short; the unlabelled frames get weight 0 (kept)",
    "non_finite_features": "features contain NaN or inf",
    "missing_ivector": "no i-vector matrix for the utterance",
    "ivector_length_mismatch": "i-vector rows do not cover the utterance within tolerance",
    "non_finite_ivector": "i-vectors contain NaN or inf",
    "partial_minibatch": "chunk left over after the last full minibatch (nnet3-merge-egs rule)",
}


class DataError(ValueError):
    """Inconsistent input that training must not continue with; names the utterance."""

    def __init__(self, utt: str, problem: str):
        super().__init__(f"utterance '{utt}': {problem}")
        self.utt = utt


@dataclass
class SkipReport:
    """Counts of skipped items per reason; mergeable across ranks and serialisable."""

    max_examples: int = 5
    counts: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, key: str, frames: int = 0) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(REASONS)}")
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.frames[reason] = self.frames.get(reason, 0) + int(frames)
        ids = self.examples.setdefault(reason, [])
        if len(ids) < self.max_examples:
            ids.append(key)

    def merge(self, other: SkipReport) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            self.frames[reason] = self.frames.get(reason, 0) + other.frames.get(reason, 0)
            ids = self.examples.setdefault(reason, [])
            ids.extend(other.examples.get(reason, [])[: max(0, self.max_examples - len(ids))])

    @classmethod
    def merged(cls, reports: Iterable[SkipReport]) -> SkipReport:
        total = cls()
        for report in reports:
            total.merge(report)
        return total

    def total(self, reason: str | None = None) -> int:
        return self.counts.get(reason, 0) if reason is not None else sum(self.counts.values())

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        lines = []
        for reason in sorted(self.counts):
            ids = ", ".join(self.examples.get(reason, []))
            more = ", ..." if self.counts[reason] > len(self.examples.get(reason, [])) else ""
            lines.append(f"{reason}: {self.counts[reason]} ({self.frames.get(reason, 0)} frames; "
                         f"{REASONS[reason]}; e.g. {ids}{more})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"max_examples": self.max_examples, "counts": dict(self.counts),
                "frames": dict(self.frames),
                "examples": {k: list(v) for k, v in self.examples.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> SkipReport:
        return cls(max_examples=state["max_examples"], counts=dict(state["counts"]),
                   frames=dict(state["frames"]),
                   examples={k: list(v) for k, v in state["examples"].items()})
