"""The communicator interface every backend implements, its timing, and the size-1 backend.

Algorithms talk to other processes only through `Communicator`. Tensors are flat and contiguous;
reductions are in place (the trailing underscore says so). Every call is timed, so a run can report
how many seconds it spent communicating (`stats`), and the calls in flight are visible to the
watchdog (`oldest_in_flight`), which turns a hang into an abort that names the operation.
"""
from __future__ import annotations

import abc
import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import torch


class CommAborted(RuntimeError):
    """Raised by operations of an in-process group after one of its ranks aborted."""


class CommTimeout(RuntimeError):
    """Raised by an in-process group when an operation waited longer than its timeout."""


@dataclass
class OpStats:
    calls: int = 0
    seconds: float = 0.0
    bytes: int = 0


class CommStats:
    """Seconds, calls and bytes per operation kind; safe to update from several threads."""

    def __init__(self) -> None:
        self.ops: dict[str, OpStats] = {}
        self._lock = threading.Lock()

    def add(self, op: str, seconds: float, nbytes: int) -> None:
        with self._lock:
            entry = self.ops.setdefault(op, OpStats())
            entry.calls += 1
            entry.seconds += seconds
            entry.bytes += nbytes

    @property
    def seconds(self) -> float:
        with self._lock:
            return sum(entry.seconds for entry in self.ops.values())

    def as_dict(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {op: vars(entry).copy() for op, entry in sorted(self.ops.items())}


class Request(abc.ABC):
    """A nonblocking operation; `wait()` completes it (and any copy back from a staging buffer)."""

    @abc.abstractmethod
    def wait(self) -> None: ...


class CompletedRequest(Request):
    def wait(self) -> None:
        return None


class CallbackRequest(Request):
    """Wraps a backend request: times the wait and runs `then` (e.g. a staging copy-back) after it."""

    def __init__(self, comm: Communicator, op: str, nbytes: int, wait: Callable[[], Any],
                 then: Callable[[], Any] | None = None) -> None:
        self._comm, self._op, self._nbytes = comm, op, nbytes
        self._wait, self._then = wait, then
        self._done = False

    def wait(self) -> None:
        if self._done:
            return
        with self._comm.timed(self._op, self._nbytes):
            self._wait()
            if self._then is not None:
                self._then()
        self._done = True


class HeartbeatChannel(abc.ABC):
    """Small out-of-band messages for the watchdog; never blocks."""

    @abc.abstractmethod
    def post(self, dest: int, payload: tuple[float, float]) -> None: ...

    @abc.abstractmethod
    def drain(self, source: int) -> list[tuple[float, float]]: ...


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Communicator(abc.ABC):
    """Rank-aware transport. Backends implement the underscore methods; the public ones add timing.

    Collectives must be called by every rank of the communicator in the same order. `dup()` gives an
    independent channel for a communication thread, so its messages never match the main thread's.
    """

    #: whether two threads may use this communicator (or its dups) at the same time
    thread_safe: bool = True

    def __init__(self, rank: int, size: int) -> None:
        self.rank = rank
        self.size = size
        self.stats = CommStats()
        self.ops_completed = 0
        self._in_flight: dict[int, tuple[str, float]] = {}

    # ---- timing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, op: str, nbytes_moved: int = 0) -> Iterator[None]:
        ident = threading.get_ident()
        start = time.perf_counter()
        self._in_flight[ident] = (op, start)
        try:
            yield
        finally:
            self._in_flight.pop(ident, None)
            self.stats.add(op, time.perf_counter() - start, nbytes_moved)
            self.ops_completed += 1

    def oldest_in_flight(self) -> tuple[str, float] | None:
        """(operation, seconds waited) of the longest-running call now in progress, if any."""
        now = time.perf_counter()
        entries = list(self._in_flight.values())
        if not entries:
            return None
        op, start = min(entries, key=lambda entry: entry[1])
        return op, now - start

    # ---- collectives -----------------------------------------------------------------------
    def allreduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            with self.timed("allreduce", nbytes(t)):
                self._allreduce_sum_(t)
        return t

    def iallreduce_sum_(self, t: torch.Tensor) -> Request:
        if self.size == 1:
            return CompletedRequest()
        with self.timed("iallreduce-start", 0):
            wait, then = self._iallreduce_sum_(t)
        return CallbackRequest(self, "iallreduce", nbytes(t), wait, then)

    def broadcast_(self, t: torch.Tensor, root: int) -> torch.Tensor:
        if self.size > 1:
            with self.timed("broadcast", nbytes(t)):
                self._broadcast_(t, root)
        return t

    def barrier(self) -> None:
        if self.size > 1:
            with self.timed("barrier"):
                self._barrier()

    def allgather_object(self, obj: Any) -> list[Any]:
        if self.size == 1:
            return [obj]
        with self.timed("allgather-object"):
            return self._allgather_object(obj)

    # ---- point to point --------------------------------------------------------------------
    def send(self, t: torch.Tensor, dest: int, tag: int = 0) -> None:
        with self.timed("send", nbytes(t)):
            self._send(t, dest, tag)

    def recv(self, t: torch.Tensor, source: int | None = None, tag: int = 0) -> int:
        """Receive into `t` from `source` (None: any rank); returns the sender's rank."""
        with self.timed("recv", nbytes(t)):
            return self._recv(t, source, tag)

    def isend(self, t: torch.Tensor, dest: int, tag: int = 0) -> Request:
        wait, then = self._isend(t, dest, tag)
        return CallbackRequest(self, "isend", nbytes(t), wait, then)

    def irecv(self, t: torch.Tensor, source: int, tag: int = 0) -> Request:
        wait, then = self._irecv(t, source, tag)
        return CallbackRequest(self, "irecv", nbytes(t), wait, then)

    def exchange(self, peer: int, send_buf: torch.Tensor, recv_buf: torch.Tensor, tag: int = 0) -> None:
        """Send `send_buf` to `peer` and receive its buffer into `recv_buf` (both sides call this)."""
        with self.timed("exchange", nbytes(send_buf) + nbytes(recv_buf)):
            self._exchange(peer, send_buf, recv_buf, tag)

    # ---- structure and failure -------------------------------------------------------------
    @abc.abstractmethod
    def split(self, color: int | None, key: int | None = None) -> Communicator | None:
        """Collective: ranks with the same color form a new communicator ordered by (key, rank).
        Ranks passing color None get None."""

    @abc.abstractmethod
    def dup(self) -> Communicator:
        """Collective: the same ranks on an independent channel (for a communication thread)."""

    @abc.abstractmethod
    def heartbeats(self) -> HeartbeatChannel:
        """Collective: an out-of-band channel for the watchdog."""

    def abort(self, message: str) -> NoReturn:
        """Print `message` and end every rank of the job with a non-zero status."""
        print(f"kaldi_avg.parallel: {message}", file=sys.stderr, flush=True)
        time.sleep(0.2)   # MPI_Abort tears the launcher's output forwarding down: let it read the line first
        self._abort()
        os._exit(1)

    # ---- backend hooks ---------------------------------------------------------------------
    def _abort(self) -> None:
        return None

    @abc.abstractmethod
    def _allreduce_sum_(self, t: torch.Tensor) -> None: ...

    @abc.abstractmethod
    def _iallreduce_sum_(self, t: torch.Tensor) -> tuple[Callable[[], Any], Callable[[], Any] | None]: ...

    @abc.abstractmethod
    def _broadcast_(self, t: torch.Tensor, root: int) -> None: ...

    @abc.abstractmethod
    def _barrier(self) -> None: ...

    @abc.abstractmethod
    def _allgather_object(self, obj: Any) -> list[Any]: ...

    @abc.abstractmethod
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None: ...

    @abc.abstractmethod
    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int: ...

    @abc.abstractmethod
    def _isend(self, t: torch.Tensor, dest: int, tag: int) -> tuple[Callable[[], Any], Callable[[], Any] | None]: ...

    @abc.abstractmethod
    def _irecv(self, t: torch.Tensor, source: int, tag: int) -> tuple[Callable[[], Any], Callable[[], Any] | None]: ...

    def _exchange(self, peer: int, send_buf: torch.Tensor, recv_buf: torch.Tensor, tag: int) -> None:
        send_wait, send_then = self._isend(send_buf, peer, tag)
        recv_wait, recv_then = self._irecv(recv_buf, peer, tag)
        for wait, then in ((recv_wait, recv_then), (send_wait, send_then)):
            wait()
            if then is not None:
                then()


class _NoPeers(HeartbeatChannel):
    def post(self, dest: int, payload: tuple[float, float]) -> None:
        raise ValueError("a size-1 communicator has no peers")

    def drain(self, source: int) -> list[tuple[float, float]]:
        return []


class LocalCommunicator(Communicator):
    """One process, no peers: collectives are identities. Used by single-process runs and the simulator."""

    def __init__(self) -> None:
        super().__init__(rank=0, size=1)

    def split(self, color: int | None, key: int | None = None) -> LocalCommunicator | None:
        return None if color is None else LocalCommunicator()

    def dup(self) -> LocalCommunicator:
        return LocalCommunicator()

    def heartbeats(self) -> HeartbeatChannel:
        return _NoPeers()

    def _no_peer(self, *_: Any) -> NoReturn:
        raise ValueError("a size-1 communicator has no peers to talk to")

    _allreduce_sum_ = _broadcast_ = _send = _recv = _isend = _irecv = _no_peer
    _iallreduce_sum_ = _no_peer

    def _barrier(self) -> None:
        return None

    def _allgather_object(self, obj: Any) -> list[Any]:
        return [obj]


def flatten_tensors(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """One contiguous copy of several tensors, so that they travel in a single message."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_into(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n
