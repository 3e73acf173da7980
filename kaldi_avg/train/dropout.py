"""`--trainer.dropout-schedule`, with the syntax and arithmetic of Kaldi's
steps/libs/nnet3/train/dropout_schedule.py.

The option holds one or more blank-separated schedules `[pattern=]p0,p1@f1,...,pN`. A schedule
is piecewise linear in the fraction of the training data processed: p0 at fraction 0, pN at 1,
and each middle point `p@f` at fraction f (a bare `p` means f = 0.5); the fractions must not
decrease, so repeating one gives a step. `pattern` picks the components by name (`*` matches
anything; the default is `*`), as nnet3-copy's `set-dropout-proportion` edit does. Each
iteration applies the proportions for the fraction processed before it (archives processed /
archives to process), which keeps the schedule independent of the number of jobs.
"""
from __future__ import annotations

from dataclasses import dataclass

OPTION = "--trainer.dropout-schedule"


class DropoutScheduleError(ValueError):
    """A malformed --trainer.dropout-schedule value; the message names the option."""


@dataclass(frozen=True)
class DropoutSchedule:
    pattern: str
    points: tuple[tuple[float, float], ...]   # (data fraction, proportion); fractions 0 .. 1, non-decreasing

    def proportion(self, data_fraction: float) -> float:
        """The piecewise-linear value at `data_fraction` (Kaldi's _get_component_dropout)."""
        if not 0.0 <= data_fraction <= 1.0:
            raise ValueError(f"data fraction {data_fraction} is not in [0, 1]")
        if data_fraction == 0.0:
            return self.points[0][1]   # the first value, even where later points also sit at 0
        lower = max(i for i, (f, _) in enumerate(self.points) if f <= data_fraction)
        if lower == len(self.points) - 1:
            return self.points[lower][1]
        (f0, p0), (f1, p1) = self.points[lower], self.points[lower + 1]
        return (data_fraction - f0) * (p1 - p0) / (f1 - f0) + p0


def parse_dropout_schedule(text: str) -> list[DropoutSchedule]:
    """The schedules of an option value; DropoutScheduleError if it is malformed."""
    schedules = [_parse_one(part, text) for part in text.split()]
    if not schedules:
        raise DropoutScheduleError(f"{OPTION} is empty")
    return schedules


def dropout_proportions(schedules: list[DropoutSchedule], data_fraction: float) -> list[tuple[str, float]]:
    """(component-name pattern, proportion) for each schedule, in order (later ones win where
    patterns overlap, as with Kaldi's sequence of edits)."""
    return [(s.pattern, s.proportion(data_fraction)) for s in schedules]


def describe(proportions: list[tuple[str, float]]) -> str:
    """The log text Kaldi's train script prints for an iteration."""
    return ", ".join(f"pattern/dropout-proportion={pattern}/{p}" for pattern, p in proportions)


def _parse_one(part: str, text: str) -> DropoutSchedule:
    pieces = part.split("=")
    if len(pieces) > 2:
        raise DropoutScheduleError(f"{OPTION}: {part!r} in {text!r}: expected 'pattern=values' or 'values'")
    pattern, values = pieces if len(pieces) == 2 else ("*", pieces[0])
    items = values.split(",")
    if len(items) < 2:
        raise DropoutScheduleError(f"{OPTION}: {part!r} in {text!r} must give at least the start and end "
                                   "proportions, e.g. '0,0.3@0.5,0'")
    points = [(0.0, _number(items[0], part, text))]
    for item in items[1:-1]:
        value_at = item.split("@")
        if len(value_at) > 2:
            raise DropoutScheduleError(f"{OPTION}: {item!r} in {text!r}: expected 'proportion@fraction'")
        value = value_at[0]
        fraction = _number(value_at[1], part, text) if len(value_at) == 2 else 0.5
        if not points[-1][0] <= fraction <= 1.0:
            raise DropoutScheduleError(f"{OPTION}: {item!r} in {text!r}: data fractions must increase "
                                       "within [0, 1]")
        points.append((fraction, _number(value, part, text)))
    points.append((1.0, _number(items[-1], part, text)))
    for _, p in points:
        if not 0.0 <= p <= 1.0:
            raise DropoutScheduleError(f"{OPTION}: proportion {p} in {text!r} is not in [0, 1]")
    return DropoutSchedule(pattern, tuple(points))


def _number(word: str, part: str, text: str) -> float:
    try:
        return float(word)
    except ValueError:
        raise DropoutScheduleError(f"{OPTION}: cannot read {word!r} in {part!r} of {text!r} as a number") from None
