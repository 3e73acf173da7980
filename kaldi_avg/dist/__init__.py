"""Distributed training: communicators, the averaging algorithms, and an N-worker simulator.

Importing this package needs neither mpi4py nor an initialized torch.distributed; the backends are
imported by `make_communicator` when asked for.
"""
from __future__ import annotations

from .base import DEFAULT, MANUAL, Algorithm, CommEvent, CommLog, Option, common_step_count
from .comm import CommAborted, CommTimeout, Communicator, LocalCommunicator
from .flat import FlatParams, Replica, optimizer_state_tensors
from .inprocess import InProcessGroup, run_ranks
from .registry import ALGORITHMS, add_algorithm_options, algorithm_kwargs, build_algorithm, make_algorithm
from .simulate import CostModel, Simulator, SimulationReport, StepTime
from .watchdog import Watchdog, announce, failure_guard, mpiexec_command

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
    "ALGORITHMS", "Algorithm", "BACKENDS", "CommAborted", "CommEvent", "CommLog", "CommTimeout", "Communicator",
    "CostModel", "DEFAULT", "FlatParams", "InProcessGroup", "LocalCommunicator", "MANUAL", "Option", "Replica",
    "SimulationReport", "Simulator", "StepTime", "Watchdog", "add_algorithm_options", "algorithm_kwargs",
    "announce", "build_algorithm", "common_step_count", "failure_guard", "make_algorithm", "make_communicator",
    "mpiexec_command", "optimizer_state_tensors", "run_ranks",
]
