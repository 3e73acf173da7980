"""The algorithms by name, their options, and the `--averaging.*` command-line options made from them.

Each algorithm class declares `Options`, a frozen dataclass (kaldi_avg.parallel.options); the
command line is generated from those dataclasses' fields, and `algorithm_options` turns the parsed
arguments back into one of them, which is what the training configuration carries.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from .adpsgd import ADPSGD
from .adpsgd_delay1 import ADPSGDDelay1
from .asgd import ASGD
from .base import Algorithm
from .bmuf import BMUF
from .comm import Communicator
from .easgd import EASGD
from .hadpsgd import HierarchicalADPSGD
from .ma import ModelAveraging
from .options import AlgorithmOptions, flag, own_fields, parser_of
from .post_local_sgd import PostLocalSGD
from .ssgd import SSGD

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    ModelAveraging, BMUF, EASGD, ASGD, SSGD, ADPSGD, HierarchicalADPSGD, ADPSGDDelay1, PostLocalSGD)}

DEFAULT_ALGORITHM = ModelAveraging.name
#: the options of a run that names no algorithm: Kaldi's own iterations
DEFAULT_ALGORITHM_OPTIONS: AlgorithmOptions = ALGORITHMS[DEFAULT_ALGORITHM].Options()

_PREFIX = "averaging_"


def _all_options() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Each algorithm-specific option once, by its command-line name (with the algorithms that read
    it); an option several algorithms declare must agree on its parser, default and choices."""
    merged: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for name, cls in ALGORITHMS.items():
        for f in own_fields(cls.Options):
            if flag(f) in merged:
                known = merged[flag(f)][0]
                if (parser_of(known), known.default, known.metadata["choices"]) != \
                        (parser_of(f), f.default, f.metadata["choices"]):
                    raise TypeError(f"option {flag(f)} is declared differently by {name}")
                merged[flag(f)][1].append(name)
            else:
                merged[flag(f)] = (f, [name])
    return merged


def add_algorithm_options(parser: argparse.ArgumentParser) -> None:
    """Add `--averaging.algorithm`, the options every algorithm takes (`--averaging.period-frames`,
    `--averaging.seed`) and every algorithm's own options (`--averaging.<name>`) to `parser`."""
    group = parser.add_argument_group("distributed training algorithm (kaldi_avg.parallel)")
    group.add_argument("--averaging.algorithm", dest=_PREFIX + "algorithm", default=DEFAULT_ALGORITHM,
                       choices=sorted(ALGORITHMS), help="the distributed training algorithm")
    for f in dataclasses.fields(AlgorithmOptions):
        group.add_argument(f"--averaging.{flag(f)}", dest=_PREFIX + f.name, type=parser_of(f),
                           metavar=f.metadata["metavar"], default=f.default, help=f.metadata["help"])
    for name, (f, users) in _all_options().items():
        group.add_argument(f"--averaging.{name}", dest=_PREFIX + f.name, type=parser_of(f),
                           metavar=f.metadata["metavar"], default=f.default, choices=f.metadata["choices"],
                           help=f"{f.metadata['help']} [{', '.join(users)}; default {f.default}]")


def algorithm_options(args: argparse.Namespace) -> AlgorithmOptions:
    """The chosen algorithm's options, from parsed `--averaging.*` arguments (ValueError if invalid)."""
    cls = ALGORITHMS[getattr(args, _PREFIX + "algorithm")]
    return cls.Options(**{f.name: getattr(args, _PREFIX + f.name) for f in dataclasses.fields(cls.Options)})


def algorithm_class(options: AlgorithmOptions) -> type[Algorithm]:
    """The algorithm that `options` are for."""
    for cls in ALGORITHMS.values():
        if type(options) is cls.Options:
            return cls
    raise TypeError(f"no algorithm takes {type(options).__name__}")


def algorithm_from_options(options: AlgorithmOptions, comm: Communicator, n_local: int = 1) -> Algorithm:
    """The algorithm that `options` are for, on `comm` with `n_local` replicas per process."""
    return algorithm_class(options)(comm, n_local, options)


def make_algorithm(name: str, comm: Communicator, n_local: int = 1, **options: Any) -> Algorithm:
    """The algorithm `name` with keyword options (its `Options` fields, e.g. block_momentum=0.5)."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(ALGORITHMS)}") from None
    return cls(comm, n_local, cls.Options(**options))
