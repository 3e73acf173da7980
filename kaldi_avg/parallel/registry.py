"""The algorithms by name, and their `--averaging.*` command-line options."""
from __future__ import annotations

import argparse
from typing import Any

from .adpsgd import ADPSGD
from .adpsgd_delay1 import ADPSGDDelay1
from .asgd import ASGD
from .base import DEFAULT, Algorithm, Option
from .bmuf import BMUF
from .comm import Communicator
from .easgd import EASGD
from .hadpsgd import HierarchicalADPSGD
from .ma import ModelAveraging
from .options import period_frames
from .post_local_sgd import PostLocalSGD
from .ssgd import SSGD

ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (
    ModelAveraging, BMUF, EASGD, ASGD, SSGD, ADPSGD, HierarchicalADPSGD, ADPSGDDelay1, PostLocalSGD)}

_PREFIX = "averaging_"


def _all_options() -> dict[str, tuple[Option, list[str]]]:
    """Each option once (with the algorithms that read it); shared options must agree."""
    merged: dict[str, tuple[Option, list[str]]] = {}
    for name, cls in ALGORITHMS.items():
        for option in cls.OPTIONS:
            if option.name in merged:
                known = merged[option.name][0]
                if (known.type, known.default, known.choices) != (option.type, option.default, option.choices):
                    raise TypeError(f"option {option.name} is declared differently by {name}")
                merged[option.name][1].append(name)
            else:
                merged[option.name] = (option, [name])
    return merged


def add_algorithm_options(parser: argparse.ArgumentParser) -> None:
    """Add `--averaging.algorithm`, `--averaging.period-frames`, `--averaging.seed` and every
    algorithm's own options (`--averaging.<name>`) to `parser`."""
    group = parser.add_argument_group("distributed training algorithm (kaldi_avg.parallel)")
    group.add_argument("--averaging.algorithm", dest=_PREFIX + "algorithm", default="ma",
                       choices=sorted(ALGORITHMS), help="the distributed training algorithm")
    group.add_argument("--averaging.period-frames", dest=_PREFIX + "period_frames", type=period_frames,
                       metavar="N|manual",
                       default=DEFAULT, help="frames per worker between synchronizations: an integer (0: "
                       "every step) or manual; default: the algorithm's paper value")
    group.add_argument("--averaging.seed", dest=_PREFIX + "seed", type=int, default=0, metavar="N",
                       help="seed for partner choices (must be the same on every rank)")
    for name, (option, users) in _all_options().items():
        group.add_argument(f"--averaging.{name}", dest=_PREFIX + option.dest, type=option.type, metavar="VALUE",
                           default=option.default, choices=option.choices,
                           help=f"{option.help} [{', '.join(users)}; default {option.default}]")


def algorithm_kwargs(args: argparse.Namespace) -> tuple[type[Algorithm], dict[str, Any]]:
    """The chosen class and the keyword arguments its constructor takes, from parsed options."""
    cls = ALGORITHMS[getattr(args, _PREFIX + "algorithm")]
    kwargs = {option.dest: getattr(args, _PREFIX + option.dest) for option in cls.OPTIONS}
    kwargs["period_frames"] = getattr(args, _PREFIX + "period_frames")
    kwargs["seed"] = getattr(args, _PREFIX + "seed")
    return cls, kwargs


def build_algorithm(args: argparse.Namespace, comm: Communicator, n_local: int = 1) -> Algorithm:
    """The algorithm chosen on the command line, for `comm` with `n_local` replicas per process."""
    cls, kwargs = algorithm_kwargs(args)
    return cls(comm, n_local, **kwargs)


def make_algorithm(name: str, comm: Communicator, n_local: int = 1, **options: Any) -> Algorithm:
    """The algorithm `name` with keyword options (python names, e.g. block_momentum=0.5)."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose from {sorted(ALGORITHMS)}") from None
    return cls(comm, n_local, **options)
