"""The algorithms' options: one frozen dataclass per algorithm, from which `--averaging.*` is made.

Every option is declared once, as a field of its algorithm's options dataclass written with
`option(default, help, choices)`: the field's type annotation gives the command-line parser
(`PARSERS`), its default is both the algorithm's and the one `--help` shows, and `__post_init__`
checks the values however they arrive (command line, `make_algorithm`, the experiments). An option
that several algorithms read is declared by one of them and copied into the others with `same_as`,
so `--averaging.<name>` means the same thing for all of them (the registry checks this).
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..options import kaldi_bool


class _Default:
    """The type of `DEFAULT` (one instance, which pickles as itself)."""

    def __repr__(self) -> str:
        return "DEFAULT"

    def __reduce__(self) -> str:
        return "DEFAULT"


#: the period option's value that means "only when the driver calls sync()"
MANUAL = None
#: the period option's default: the algorithm's paper value (`Algorithm.DEFAULT_PERIOD_FRAMES`)
DEFAULT: Any = _Default()


def optional_float(text: str) -> float | None:
    """A float, or none/default for "use the algorithm's own default"."""
    if text.strip().lower() in ("none", "default", ""):
        return None
    return float(text)


def parse_period(text: str) -> int | None:
    """Frames per worker between synchronizations: an integer ≥ 0 (0: every step) or "manual"
    (only when the driver calls sync())."""
    if text.strip().lower() == "manual":
        return MANUAL
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("the period must be >= 0 frames, or manual")
    return value


#: command-line parser of each field type annotation
PARSERS: dict[str, Callable[[str], Any]] = {
    "int": int, "float": float, "str": str, "bool": kaldi_bool, "float | None": optional_float}


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None, *,
           parse: Callable[[str], Any] | None = None, metavar: str = "VALUE") -> Any:
    """A field of an options dataclass, and its `--averaging.<name>` option (name: the field's, with
    dashes). `parse` overrides the parser its type annotation gives."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "parse": parse,
                                                        "metavar": metavar})


def same_as(options: type[AlgorithmOptions], name: str) -> Any:
    """The field `name` as `options` declares it (default, help, choices): for an option shared with
    another algorithm."""
    declared = {f.name: f for f in dataclasses.fields(options)}[name]
    return dataclasses.field(default=declared.default, metadata=declared.metadata)


def flag(f: dataclasses.Field) -> str:
    """The option's name after `--averaging.`."""
    return f.name.replace("_", "-")


def parser_of(f: dataclasses.Field) -> Callable[[str], Any]:
    """How the command line's text becomes the field's value."""
    if f.metadata.get("parse") is not None:
        return f.metadata["parse"]
    annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        return PARSERS[annotation]
    except KeyError:
        raise TypeError(f"option {flag(f)}: no command-line parser for type {annotation}; "
                        "give option(..., parse=...)") from None


@dataclass(frozen=True, kw_only=True)
class AlgorithmOptions:
    """What every algorithm takes; each algorithm's `Options` adds its own fields."""

    period_frames: int | None = option(
        DEFAULT, "frames per worker between synchronizations: an integer (0: every step) or manual; default: "
        "the algorithm's paper value", parse=parse_period, metavar="N|manual")
    seed: int = option(0, "seed for partner choices (must be the same on every rank)", metavar="N")

    def __post_init__(self) -> None:
        period = self.period_frames
        if period is not DEFAULT and period is not MANUAL and period < 0:
            raise ValueError("the period must be >= 0 frames (or manual)")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ValueError(f"unknown {flag(f)} {getattr(self, f.name)!r}; choose from {choices}")

    @property
    def kaldi_jobs(self) -> bool:
        """Whether these options ask for Kaldi's own iteration instead of an algorithm's workers:
        independent jobs that the training driver selects from or averages once per iteration
        (`ModelAveraging.for_kaldi_jobs`). Only model averaging without a period does."""
        return False


def own_fields(options: type[AlgorithmOptions]) -> list[dataclasses.Field]:
    """The fields `options` adds to those of every algorithm."""
    common = {f.name for f in dataclasses.fields(AlgorithmOptions)}
    return [f for f in dataclasses.fields(options) if f.name not in common]
