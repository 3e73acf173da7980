"""Distributed training: communicators, the averaging algorithms, and an N-worker simulator.

Modules:
  comm, mpi_backend, torch_backend, inprocess   the Communicator interface; mpi4py, torch.distributed
                                                (gloo/nccl), size 1 (LocalCommunicator), N threads (tests)
  flat                                          one flat parameter/gradient buffer per replica (FlatParams)
  base                                          the Algorithm base class, period clocks, communication log
  options                                       AlgorithmOptions: each algorithm's frozen options dataclass
  averaging, gossip, server                     pure arithmetic; gossip pairing and thread; parameter server
  ma, bmuf, easgd, asgd, ssgd, adpsgd, hadpsgd, adpsgd_delay1, post_local_sgd   one algorithm each
  registry                                      ALGORITHMS, `--averaging.*` options made from the dataclasses
  simulate                                      N logical workers with an event clock (Simulator)
  watchdog                                      failure_guard, ExitMonitor, Watchdog: a failure ends every rank

Importing this package needs neither mpi4py nor an initialized torch.distributed; the backends are
imported by `make_communicator` when asked for.
"""
from __future__ import annotations

from .base import Algorithm, CommEvent, CommLog, common_step_count
from .comm import CommAborted, CommTimeout, Communicator, LocalCommunicator
from .flat import FlatParams, Replica
from .inprocess import InProcessGroup, run_ranks
from .ma import ModelAveraging
from .options import DEFAULT, MANUAL, AlgorithmOptions, option, same_as
from .registry import (
    ALGORITHMS,
    DEFAULT_ALGORITHM_OPTIONS,
    add_algorithm_options,
    algorithm_class,
    algorithm_from_options,
    algorithm_options,
    make_algorithm,
)
from .simulate import CostModel, SimulationReport, Simulator, StepTime
from .watchdog import ExitMonitor, Watchdog, failure_guard

BACKENDS = ("local", "mpi", "torch")


def make_communicator(backend: str = "mpi", **options) -> Communicator:
    """A communicator for this process: "mpi" (mpi4py, COMM_WORLD), "torch" (torch.distributed
    initialized from the launcher's environment; options: backend=gloo|nccl, timeout_s) or "local"."""
    if backend == "local":
        return LocalCommunicator()
    if backend == "mpi":
        from .mpi_backend import MPICommunicator
        return MPICommunicator(**options)
    if backend == "torch":
        from .torch_backend import TorchDistCommunicator
        return TorchDistCommunicator.init(**options)
    raise ValueError(f"unknown communication backend {backend!r}; choose from {BACKENDS}")


__all__ = [
    "ALGORITHMS", "Algorithm", "AlgorithmOptions", "BACKENDS", "CommAborted", "CommEvent", "CommLog", "CommTimeout",
    "Communicator", "CostModel", "DEFAULT", "DEFAULT_ALGORITHM_OPTIONS", "ExitMonitor", "FlatParams",
    "InProcessGroup", "LocalCommunicator", "MANUAL", "ModelAveraging", "Replica", "SimulationReport", "Simulator",
    "StepTime", "Watchdog", "add_algorithm_options", "algorithm_class", "algorithm_from_options",
    "algorithm_options", "common_step_count", "failure_guard", "make_algorithm", "make_communicator", "option",
    "run_ranks", "same_as",
]
