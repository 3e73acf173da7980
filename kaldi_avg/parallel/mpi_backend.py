"""mpi4py backend: MPI calls on `tensor.numpy()` views (no copies for CPU tensors).

CUDA tensors go to MPI directly only when the library is CUDA-aware, which is *detected* at start-up
(`MPIX_Query_cuda_support` from the loaded libmpi, confirmed by a probe allreduce on the device;
`KALDI_AVG_CUDA_AWARE_MPI=0/1` overrides). Otherwise they are staged through pinned host buffers and
the copies are counted in the communication time. mpi4py is imported only when this backend is built.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import import_extra, missing_extra
from .comm import Communicator, HeartbeatChannel

MPI_EXTRA = "mpi"   # pip install 'kaldi-avg[mpi]': mpi4py and MPICH's mpiexec (setup.py)
MPI_NEEDED_BY = "the MPI backend (--mpi.backend=mpi, the default under an MPI launcher)"


def _mpi():
    """mpi4py's MPI module, or a one-line MissingExtraError naming the extra that installs it."""
    return import_extra("mpi4py.MPI", MPI_EXTRA, MPI_NEEDED_BY)


def mpi4py_missing() -> str | None:
    """What to install when mpi4py is not there (found without importing mpi4py.MPI, which would
    initialize MPI); None when it is."""
    try:
        found = importlib.util.find_spec("mpi4py") is not None
    except (ImportError, ValueError):   # ValueError: sys.modules["mpi4py"] is None
        found = False
    return None if found else missing_extra("mpi4py", MPI_EXTRA, MPI_NEEDED_BY, "not installed")


def _query_cuda_support() -> bool:
    """What the loaded MPI library says about device buffers (False if it cannot say)."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "libmpi" in os.path.basename(fields[-1]):
                paths.add(fields[-1])
    for path in sorted(paths):
        query = getattr(ctypes.CDLL(path), "MPIX_Query_cuda_support", None)
        if query is not None:
            return bool(query())
    return False


class _HostStaging:
    """Pinned host buffers (one set per thread) for moving CUDA tensors through a host-only MPI."""

    def __init__(self) -> None:
        self._local = threading.local()

    def buffer(self, t: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        if fresh:  # a nonblocking operation owns its buffer until it completes
            return torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = {}
        key = (t.numel(), t.dtype)
        if key not in cache:
            cache[key] = torch.empty(t.numel(), dtype=t.dtype, pin_memory=True)
        return cache[key].view(t.shape)

    def to_host(self, t: torch.Tensor, fresh: bool = False) -> torch.Tensor:
        host = self.buffer(t, fresh)
        host.copy_(t, non_blocking=True)
        torch.cuda.current_stream(t.device).synchronize()
        return host


class _MPIHeartbeats(HeartbeatChannel):
    def __init__(self, comm) -> None:
        self._comm = comm
        self._pending: list[Any] = []

    def post(self, dest: int, payload: tuple[float, float]) -> None:
        self._pending = [req for req in self._pending if not req[0].Test()]
        data = np.array(payload, dtype=np.float64)
        self._pending.append((self._comm.Isend(data, dest=dest, tag=1), data))

    def drain(self, source: int) -> list[tuple[float, float]]:
        got = []
        while self._comm.Iprobe(source=source, tag=1):
            data = np.empty(2, dtype=np.float64)
            self._comm.Recv(data, source=source, tag=1)
            got.append((float(data[0]), float(data[1])))
        return got


class MPICommunicator(Communicator):
    """Wraps an mpi4py communicator (COMM_WORLD by default)."""

    def __init__(self, comm: Any = None, cuda_aware: bool | None = None) -> None:
        MPI = _mpi()
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD if comm is None else comm
        super().__init__(self._comm.Get_rank(), self._comm.Get_size())
        self.thread_safe = MPI.Query_thread() == MPI.THREAD_MULTIPLE
        self._staging = _HostStaging()
        self.cuda_aware = self._detect_cuda_aware() if cuda_aware is None else cuda_aware

    def _detect_cuda_aware(self) -> bool:
        forced = os.environ.get("KALDI_AVG_CUDA_AWARE_MPI")
        if forced is not None:
            return forced.strip() not in ("0", "false", "no", "")
        if not (torch.cuda.is_available() and _query_cuda_support()):
            return False
        probe = torch.ones(4, device="cuda")
        try:
            self._comm.Allreduce(self._MPI.IN_PLACE, probe, op=self._MPI.SUM)
            works = bool(torch.all(probe == self.size).item())
        except Exception:
            works = False
        return all(self._comm.allgather(works))

    # ---- buffers ---------------------------------------------------------------------------
    def _view(self, t: torch.Tensor, copy_in: bool, fresh: bool = False) -> tuple[Any, Callable[[], None] | None]:
        """(buffer MPI can use, copy-back to run after the operation or None)."""
        if not t.is_contiguous():
            raise ValueError("communication buffers must be contiguous")
        if t.device.type == "cpu":
            return t.detach().numpy(), None
        if self.cuda_aware:
            return t.detach(), None
        host = self._staging.to_host(t, fresh) if copy_in else self._staging.buffer(t, fresh)
        return host.numpy(), (lambda: t.copy_(host))

    # ---- collectives -----------------------------------------------------------------------
    def _allreduce_sum_(self, t: torch.Tensor) -> None:
        buf, back = self._view(t, copy_in=True)
        self._comm.Allreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        if back:
            back()

    def _iallreduce_sum_(self, t: torch.Tensor):
        buf, back = self._view(t, copy_in=True, fresh=True)
        req = self._comm.Iallreduce(self._MPI.IN_PLACE, buf, op=self._MPI.SUM)
        return req.Wait, back

    def _broadcast_(self, t: torch.Tensor, root: int) -> None:
        buf, back = self._view(t, copy_in=self.rank == root)
        self._comm.Bcast(buf, root=root)
        if back and self.rank != root:
            back()

    def _barrier(self) -> None:
        self._comm.Barrier()

    def _allgather_object(self, obj: Any) -> list[Any]:
        return self._comm.allgather(obj)

    # ---- point to point --------------------------------------------------------------------
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None:
        buf, _ = self._view(t, copy_in=True)
        self._comm.Send(buf, dest=dest, tag=tag)

    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int:
        buf, back = self._view(t, copy_in=False)
        status = self._MPI.Status()
        self._comm.Recv(buf, source=self._MPI.ANY_SOURCE if source is None else source, tag=tag, status=status)
        if back:
            back()
        return status.Get_source()

    def _isend(self, t: torch.Tensor, dest: int, tag: int):
        buf, _ = self._view(t, copy_in=True, fresh=True)
        req = self._comm.Isend(buf, dest=dest, tag=tag)
        keep_alive = buf  # the staged buffer must outlive the request
        return (lambda: (req.Wait(), keep_alive)), None

    def _irecv(self, t: torch.Tensor, source: int, tag: int):
        buf, back = self._view(t, copy_in=False, fresh=True)
        req = self._comm.Irecv(buf, source=source, tag=tag)
        return req.Wait, back

    def _exchange(self, peer: int, send_buf: torch.Tensor, recv_buf: torch.Tensor, tag: int) -> None:
        sbuf, _ = self._view(send_buf, copy_in=True)
        rbuf, back = self._view(recv_buf, copy_in=False)
        self._comm.Sendrecv(sbuf, dest=peer, sendtag=tag, recvbuf=rbuf, source=peer, recvtag=tag)
        if back:
            back()

    # ---- structure and failure -------------------------------------------------------------
    def split(self, color: int | None, key: int | None = None) -> MPICommunicator | None:
        MPI = self._MPI
        new = self._comm.Split(MPI.UNDEFINED if color is None else color, self.rank if key is None else key)
        if new == MPI.COMM_NULL:
            return None
        return MPICommunicator(new, cuda_aware=self.cuda_aware)

    def dup(self) -> MPICommunicator:
        return MPICommunicator(self._comm.Dup(), cuda_aware=self.cuda_aware)

    def heartbeats(self) -> HeartbeatChannel:
        return _MPIHeartbeats(self._comm.Dup())

    def _abort(self) -> None:
        self._MPI.COMM_WORLD.Abort(1)
