"""N ranks as N threads of one process: the real multi-rank code paths without MPI.

Sends are synchronous (a send returns only once the receiver has taken the message, like
`MPI_Ssend`), which is the strictest legal MPI behaviour: a protocol that never deadlocks here never
deadlocks under MPI. Reductions add contributions in rank order, so results are deterministic and
match the simulator's local sums. Every wait has a timeout, so a deadlock shows up as `CommTimeout`
naming the rank and the operation instead of a hang.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from .comm import CommAborted, CommTimeout, Communicator, HeartbeatChannel


@dataclass
class _Message:
    source: int
    tag: int
    payload: torch.Tensor
    taken: bool = False


@dataclass
class _PostedReceive:
    source: int | None
    tag: int
    buffer: torch.Tensor
    sender: int | None = None


@dataclass
class _Collective:
    contributions: dict[int, Any] = field(default_factory=dict)
    result: Any = None
    done: bool = False
    collected: int = 0


class _Hub:
    """State shared by all ranks of one in-process group."""

    def __init__(self, size: int, timeout_s: float) -> None:
        self.size = size
        self.timeout_s = timeout_s
        self.cond = threading.Condition()
        self.mailboxes: dict[tuple[int, int], deque[_Message]] = {}
        self.posted: dict[tuple[int, int], deque[_PostedReceive]] = {}
        self.collectives: dict[tuple[int, int], _Collective] = {}
        self.beats: dict[tuple[int, int, int], list[tuple[float, float]]] = {}
        self.aborted: str | None = None
        self.context_ids = itertools.count(1)

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        """Block (holding `cond`) until `ready()`; raise on abort or timeout."""
        deadline = time.monotonic() + self.timeout_s
        while not ready():
            if self.aborted is not None:
                raise CommAborted(self.aborted)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommTimeout(f"{what} waited more than {self.timeout_s:g} s")
            self.cond.wait(min(remaining, 0.5))
        if self.aborted is not None:
            raise CommAborted(self.aborted)


class _InProcessHeartbeats(HeartbeatChannel):
    def __init__(self, comm: InProcessCommunicator) -> None:
        self._comm = comm

    def post(self, dest: int, payload: tuple[float, float]) -> None:
        hub = self._comm._hub
        with hub.cond:
            hub.beats.setdefault((self._comm._context, dest, self._comm.rank), []).append(payload)

    def drain(self, source: int) -> list[tuple[float, float]]:
        hub = self._comm._hub
        with hub.cond:
            return hub.beats.pop((self._comm._context, self._comm.rank, source), [])


class InProcessCommunicator(Communicator):
    """One rank of an `InProcessGroup`; use it only from the thread(s) that play that rank."""

    def __init__(self, hub: _Hub, context: int, rank: int, size: int) -> None:
        super().__init__(rank, size)
        self._hub = hub
        self._context = context
        self._collective_seq = 0

    # ---- collectives: everyone contributes, the last arrival combines ------------------------
    def _collective(self, contribution: Any, combine: Callable[[list[Any]], Any], what: str) -> Any:
        hub = self._hub
        key = (self._context, self._collective_seq)
        self._collective_seq += 1
        with hub.cond:
            slot = hub.collectives.setdefault(key, _Collective())
            slot.contributions[self.rank] = contribution
            if len(slot.contributions) == self.size:
                slot.result = combine([slot.contributions[r] for r in range(self.size)])
                slot.done = True
                hub.cond.notify_all()
            hub.wait_for(lambda: slot.done, f"rank {self.rank}: {what}")
            slot.collected += 1
            if slot.collected == self.size:
                del hub.collectives[key]
            return slot.result

    @staticmethod
    def _sum_in_rank_order(parts: list[torch.Tensor]) -> torch.Tensor:
        total = parts[0].clone()
        for part in parts[1:]:
            total += part
        return total

    def _allreduce_sum_(self, t: torch.Tensor) -> None:
        t.copy_(self._collective(t.detach().clone(), self._sum_in_rank_order, "allreduce"))

    def _iallreduce_sum_(self, t: torch.Tensor):
        # Completes at once: overlap needs real concurrency, which this test backend does not model.
        self._allreduce_sum_(t)
        return (lambda: None), None

    def _broadcast_(self, t: torch.Tensor, root: int) -> None:
        mine = t.detach().clone() if self.rank == root else None
        t.copy_(self._collective(mine, lambda parts: parts[root], "broadcast"))

    def _barrier(self) -> None:
        self._collective(None, lambda parts: None, "barrier")

    def _allgather_object(self, obj: Any) -> list[Any]:
        return list(self._collective(obj, lambda parts: parts, "allgather"))

    def split(self, color: int | None, key: int | None = None) -> InProcessCommunicator | None:
        entries = self._collective((color, self.rank if key is None else key, self.rank),
                                   self._assign_contexts, "split")
        mine = entries[self.rank]
        if mine is None:
            return None
        context, rank, size = mine
        return InProcessCommunicator(self._hub, context, rank, size)

    def _assign_contexts(self, entries: list[tuple[int | None, int, int]]) -> list[tuple[int, int, int] | None]:
        out: list[tuple[int, int, int] | None] = [None] * len(entries)
        for color in sorted({c for c, _, _ in entries if c is not None}):
            members = sorted((key, rank) for c, key, rank in entries if c == color)
            context = next(self._hub.context_ids)
            for new_rank, (_, old_rank) in enumerate(members):
                out[old_rank] = (context, new_rank, len(members))
        return out

    def dup(self) -> InProcessCommunicator:
        dup = self.split(0, self.rank)
        assert dup is not None
        return dup

    def heartbeats(self) -> HeartbeatChannel:
        return _InProcessHeartbeats(self.dup())

    # ---- point to point: synchronous sends, receives matched in posting order ---------------
    def _post(self, t: torch.Tensor, dest: int, tag: int) -> _Message:
        if not 0 <= dest < self.size:
            raise ValueError(f"rank {self.rank}: no rank {dest} in a group of {self.size}")
        message = _Message(self.rank, tag, t.detach().clone())
        hub = self._hub
        with hub.cond:
            posted = hub.posted.setdefault((self._context, dest), deque())
            receive = next((r for r in posted if r.tag == tag and r.source in (None, self.rank)), None)
            if receive is not None:
                posted.remove(receive)
                receive.buffer.copy_(message.payload)
                receive.sender = self.rank
                message.taken = True
            else:
                hub.mailboxes.setdefault((self._context, dest), deque()).append(message)
            hub.cond.notify_all()
        return message

    def _await_taken(self, message: _Message, dest: int) -> None:
        with self._hub.cond:
            self._hub.wait_for(lambda: message.taken, f"rank {self.rank}: send to rank {dest} (tag {message.tag})")

    def _match_arrived(self, source: int | None, tag: int) -> _Message | None:
        box = self._hub.mailboxes.setdefault((self._context, self.rank), deque())
        message = next((m for m in box if m.tag == tag and source in (None, m.source)), None)
        if message is not None:
            box.remove(message)
            message.taken = True
            self._hub.cond.notify_all()
        return message

    def _post_receive(self, t: torch.Tensor, source: int | None, tag: int) -> _PostedReceive:
        """Match an arrived message now, or register the receive for the next matching send."""
        receive = _PostedReceive(source, tag, t)
        with self._hub.cond:
            message = self._match_arrived(source, tag)
            if message is not None:
                t.copy_(message.payload)
                receive.sender = message.source
            else:
                self._hub.posted.setdefault((self._context, self.rank), deque()).append(receive)
        return receive

    def _await_received(self, receive: _PostedReceive) -> int:
        origin = "any rank" if receive.source is None else f"rank {receive.source}"
        with self._hub.cond:
            self._hub.wait_for(lambda: receive.sender is not None,
                               f"rank {self.rank}: receive from {origin} (tag {receive.tag})")
        assert receive.sender is not None
        return receive.sender

    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None:
        self._await_taken(self._post(t, dest, tag), dest)

    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int:
        return self._await_received(self._post_receive(t, source, tag))

    def _isend(self, t: torch.Tensor, dest: int, tag: int):
        message = self._post(t, dest, tag)
        return (lambda: self._await_taken(message, dest)), None

    def _irecv(self, t: torch.Tensor, source: int, tag: int):
        receive = self._post_receive(t, source, tag)
        return (lambda: self._await_received(receive)), None

    # ---- failure -----------------------------------------------------------------------------
    def abort(self, message: str) -> NoReturn:
        """Wake every rank of the group with `CommAborted(message)` (the test process survives)."""
        with self._hub.cond:
            if self._hub.aborted is None:
                self._hub.aborted = message
            self._hub.cond.notify_all()
        raise CommAborted(message)


class InProcessGroup:
    """`size` communicators sharing one hub; `run(fn)` plays each rank in its own thread."""

    def __init__(self, size: int, timeout_s: float = 60.0) -> None:
        hub = _Hub(size, timeout_s)
        self.communicators = [InProcessCommunicator(hub, 0, rank, size) for rank in range(size)]

    def run(self, fn: Callable[[InProcessCommunicator], Any], join_timeout_s: float | None = None) -> list[Any]:
        """Run `fn(comm)` for every rank concurrently; return the results in rank order.

        The first exception raised by any rank is re-raised here (after all threads ended or the
        join timeout passed), annotated with the rank that raised it."""
        results: list[Any] = [None] * len(self.communicators)
        errors: list[tuple[int, BaseException]] = []

        def play(comm: InProcessCommunicator) -> None:
            try:
                results[comm.rank] = fn(comm)
            except BaseException as error:
                errors.append((comm.rank, error))
                with comm._hub.cond:
                    if comm._hub.aborted is None:
                        comm._hub.aborted = f"rank {comm.rank} failed: {error!r}"
                    comm._hub.cond.notify_all()

        threads = [threading.Thread(target=play, args=(comm,), daemon=True, name=f"rank-{comm.rank}")
                   for comm in self.communicators]
        for thread in threads:
            thread.start()
        deadline = None if join_timeout_s is None else time.monotonic() + join_timeout_s
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            raise CommTimeout(f"in-process ranks still running after {join_timeout_s} s")
        if errors:
            first = next((item for item in errors if not isinstance(item[1], CommAborted)), errors[0])
            rank, error = first
            raise RuntimeError(f"rank {rank} failed: {error!r}") from error
        return results


def run_ranks(size: int, fn: Callable[[InProcessCommunicator], Any], timeout_s: float = 60.0,
              join_timeout_s: float | None = None) -> list[Any]:
    """Run `fn(comm)` on `size` in-process ranks; each operation may wait `timeout_s`, the whole run
    `join_timeout_s` (default: four operation timeouts and 5 s)."""
    join = 4 * timeout_s + 5 if join_timeout_s is None else join_timeout_s
    return InProcessGroup(size, timeout_s).run(fn, join_timeout_s=join)
