"""Accounting for data that the pipeline could not use (docs/architecture.md, Habits).

Nothing is dropped silently: every skipped utterance or chunk is recorded under a reason with
its frames, and is counted once per (reason, key) however often it is met (an utterance with
NaN features is loaded again every epoch, and possibly on several ranks).  Reports merge
across ranks (`SkipReport.merged`) and serialize (`to_dict`/`from_dict`) so that a resumed
run (`--stage N`) continues the counts of the interrupted one.

Memory: the report keeps every recorded key with its frame count, one dict per reason, so it
grows with the number of distinct skipped items (not with epochs or ranks): about 100 bytes
per skipped utterance, i.e. 100 MB in the worst case of a million skipped utterances.

Problems that mean the inputs are inconsistent as a whole (wrong feature dimension, pdf ids
out of range) raise `DataError` instead, naming the utterance.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import UsageError


@dataclass(frozen=True)
class Reason:
    label: str            # short wording for the one-line console summary
    meaning: str          # full wording for log/skipped.log
    unit: str = "utterance"
    kept: bool = False    # recorded for information: the item is still used


REASON_INFO = {
    "too_short": Reason("too short", "utterance shorter than the smallest chunk width"),
    "missing_targets": Reason("no alignment", "no alignment for the utterance"),
    "target_length_mismatch": Reason(
        "alignment length mismatch",
        "alignment length differs from the feature length by more than the tolerance "
        "(nnet3-get-egs --targets-length-tolerance)"),
    "targets_padded": Reason(
        "alignment a few frames short (padded)",
        "alignment a few frames short; the unlabelled frames get weight 0 (kept)", kept=True),
    "unreadable": Reason("unreadable features",
                         "features could not be read (truncated or corrupt archive entry)"),
    "non_finite_features": Reason("non-finite features", "features contain NaN or inf"),
    "non_finite_output": Reason("non-finite network output",
                                "the network's output is NaN or inf (left out of the priors)",
                                unit="chunk"),
    "missing_ivector": Reason("no i-vector", "no i-vector matrix for the utterance"),
    "ivector_length_mismatch": Reason("i-vector length mismatch",
                                      "i-vector rows do not cover the utterance within tolerance"),
    "non_finite_ivector": Reason("non-finite i-vectors", "i-vectors contain NaN or inf"),
    "partial_minibatch": Reason(
        "left after the last full minibatch",
        "chunk left over after the last full minibatch (nnet3-merge-egs rule)", unit="chunk"),
}
# reason -> what it means (the wording used by `SkipReport.summary`)
REASONS = {name: reason.meaning for name, reason in REASON_INFO.items()}


class DataError(UsageError):
    """Inconsistent input that training must not continue with; names the utterance."""

    def __init__(self, utt: str, problem: str):
        super().__init__(f"utterance '{utt}': {problem}")
        self.utt = utt


@dataclass
class SkipReport:
    """Skipped items per reason, each key counted once; mergeable across ranks, serialisable.

    `skipped[reason][key]` = frames of that item, in the order the items were first met.
    """

    max_examples: int = 5
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, reason: str, key: str, frames: int = 0) -> bool:
        """Records `key` under `reason`; False (and nothing changes) if it was already there."""
        if reason not in REASON_INFO:
            raise ValueError(f"unknown skip reason {reason!r}; known: {sorted(REASON_INFO)}")
        keys = self.skipped.setdefault(reason, {})
        if key in keys:
            return False
        keys[key] = int(frames)
        return True

    def merge(self, other: SkipReport) -> None:
        """Adds `other`'s items; an item both reports hold is counted once."""
        for reason, keys in other.skipped.items():
            for key, frames in keys.items():
                self.add(reason, key, frames)

    @classmethod
    def merged(cls, reports: Iterable[SkipReport]) -> SkipReport:
        total = cls()
        for report in reports:
            total.merge(report)
        return total

    @property
    def counts(self) -> dict[str, int]:
        return {reason: len(keys) for reason, keys in self.skipped.items()}

    @property
    def frames(self) -> dict[str, int]:
        return {reason: sum(keys.values()) for reason, keys in self.skipped.items()}

    @property
    def examples(self) -> dict[str, list[str]]:
        return {reason: list(keys)[:self.max_examples] for reason, keys in self.skipped.items()}

    def total(self, reason: str | None = None) -> int:
        """Items recorded under `reason`, or under any reason (kept ones included)."""
        if reason is not None:
            return len(self.skipped.get(reason, {}))
        return sum(len(keys) for keys in self.skipped.values())

    def summary(self) -> str:
        """One line per reason, for log/skipped.log."""
        if not self.skipped:
            return "nothing skipped"
        lines = []
        for reason in sorted(self.skipped):
            keys = self.skipped[reason]
            ids = ", ".join(list(keys)[:self.max_examples])
            more = ", ..." if len(keys) > self.max_examples else ""
            lines.append(f"{reason}: {len(keys)} ({sum(keys.values())} frames; "
                         f"{REASON_INFO[reason].meaning}; e.g. {ids}{more})")
        return "\n".join(lines)

    def one_line(self) -> str:
        """e.g. "skipped 3 utterances: 2 no alignment, 1 non-finite features; kept 1
        utterance: 1 alignment a few frames short (padded)", for the console."""
        if not self.skipped:
            return "nothing skipped"
        groups: dict[tuple[bool, str], list[str]] = {}
        totals: dict[tuple[bool, str], int] = {}
        for reason in sorted(self.skipped, key=lambda r: (-len(self.skipped[r]), r)):
            info, count = REASON_INFO[reason], len(self.skipped[reason])
            group = (info.kept, info.unit)
            groups.setdefault(group, []).append(f"{count} {info.label}")
            totals[group] = totals.get(group, 0) + count
        parts = []
        for group in sorted(groups, key=lambda g: (g[0], g[1] != "utterance")):
            kept, unit = group
            n = totals[group]
            parts.append(f"{'kept' if kept else 'skipped'} {n} {unit}{'s' if n != 1 else ''}: "
                         + ", ".join(groups[group]))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"max_examples": self.max_examples,
                "skipped": {reason: dict(keys) for reason, keys in self.skipped.items()}}

    @classmethod
    def from_dict(cls, state: dict) -> SkipReport:
        return cls(max_examples=state["max_examples"],
                   skipped={reason: {k: int(f) for k, f in keys.items()}
                            for reason, keys in state["skipped"].items()})
