"""The few collectives the driver needs, over mpi4py, with a no-MPI path for one rank.

Stand-in until `kaldi_avg/dist/` provides communicators; the driver uses only `Comm`.
MPI is imported only when the process was started by an MPI launcher (PMI_SIZE /
OMPI_COMM_WORLD_SIZE set) or when asked, so single-rank runs never need mpiexec.
"""
from __future__ import annotations

import os
import sys

import numpy as np


def launched_by_mpi() -> bool:
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        if var in os.environ:
            return True
    return False


class Comm:
    """rank / world_size, `allreduce_sum`, `allgather`, `bcast`, `barrier`, `abort`."""

    def __init__(self, use_mpi: bool | None = None):
        self._mpi = None
        self.rank, self.world_size = 0, 1
        if use_mpi is None:
            use_mpi = launched_by_mpi()
        if use_mpi:
            from mpi4py import MPI  # noqa: deferred: only under a launcher
            self._MPI = MPI
            self._mpi = MPI.COMM_WORLD
            self.rank, self.world_size = self._mpi.Get_rank(), self._mpi.Get_size()

    def allreduce_sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks of a contiguous float/int array (one collective)."""
        array = np.ascontiguousarray(array)
        if self._mpi is None or self.world_size == 1:
            return array.copy()
        out = np.empty_like(array)
        self._mpi.Allreduce(array, out, op=self._MPI.SUM)
        return out

    def allgather(self, obj) -> list:
        if self._mpi is None or self.world_size == 1:
            return [obj]
        return self._mpi.allgather(obj)

    def bcast(self, obj, root: int = 0):
        if self._mpi is None or self.world_size == 1:
            return obj
        return self._mpi.bcast(obj, root=root)

    def barrier(self) -> None:
        if self._mpi is not None and self.world_size > 1:
            self._mpi.Barrier()

    def abort(self, code: int = 1) -> None:
        """Ends every rank at once (after the caller logged why)."""
        sys.stderr.flush()
        sys.stdout.flush()
        if self._mpi is not None and self.world_size > 1:
            self._mpi.Abort(code)
        os._exit(code)


def average_flat(comm: Comm, flat: np.ndarray, weight: float) -> np.ndarray:
    """sum_r weight_r * flat_r over ranks, as one Allreduce (weights should sum to 1)."""
    return comm.allreduce_sum(np.asarray(flat, dtype=np.float64) * weight)
