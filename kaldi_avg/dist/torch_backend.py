"""torch.distributed backend: gloo for CPU tensors, nccl for CUDA tensors.

Rank and size come from the launcher's environment (mpiexec's PMI_RANK/PMI_SIZE, Open MPI's
OMPI_COMM_WORLD_*, or torchrun's RANK/WORLD_SIZE). The rendezvous address is MASTER_ADDR/MASTER_PORT;
when those are unset and mpi4py is importable, rank 0 picks a free port and tells the others over MPI.
The key-value store is kept so the watchdog can exchange heartbeats through it.
"""
from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as dist

from .comm import Communicator, HeartbeatChannel

_RANK_VARIABLES = (("RANK", "WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"),
                   ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMIX_RANK", "PMIX_SIZE"))


def rank_and_size_from_environment() -> tuple[int, int]:
    for rank_var, size_var in _RANK_VARIABLES:
        if rank_var in os.environ and size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _rendezvous(rank: int, size: int) -> tuple[str, int]:
    if "MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ:
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if size == 1:
        return "127.0.0.1", _free_port()
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError("set MASTER_ADDR and MASTER_PORT (mpi4py is not available to agree on them)") from error
    address = (socket.gethostname(), _free_port()) if rank == 0 else None
    return MPI.COMM_WORLD.bcast(address, root=0)


class _StoreHeartbeats(HeartbeatChannel):
    """Heartbeats as store keys: `post` overwrites dest's slot for us, `drain` reads ours from source."""

    def __init__(self, store: dist.Store, prefix: str, rank: int) -> None:
        self._store, self._prefix, self._rank = store, prefix, rank
        self._sequence = 0
        self._seen: dict[int, int] = {}

    def _key(self, dest: int, source: int) -> str:
        return f"{self._prefix}/{dest}/{source}"

    def post(self, dest: int, payload: tuple[float, float]) -> None:
        self._sequence += 1
        self._store.set(self._key(dest, self._rank), f"{self._sequence} {payload[0]!r} {payload[1]!r}")

    def drain(self, source: int) -> list[tuple[float, float]]:
        key = self._key(self._rank, source)
        if not self._store.check([key]):
            return []
        sequence, state, progress = self._store.get(key).decode().split()
        if self._seen.get(source) == int(sequence):
            return []
        self._seen[source] = int(sequence)
        return [(float(state), float(progress))]


class TorchDistCommunicator(Communicator):
    """A torch.distributed process group (the default one unless `group` is given)."""

    def __init__(self, group: Any = None, store: dist.Store | None = None, channel: str = "world") -> None:
        self._group = group
        self._store = store
        self._channel = channel
        self._children = 0
        super().__init__(dist.get_rank(group), dist.get_world_size(group))
        # gloo and nccl serialize work per process group, so a comm thread needs its own dup().
        self.thread_safe = True

    @classmethod
    def init(cls, backend: str | None = None, timeout_s: float = 300.0) -> "TorchDistCommunicator":
        """Initialize the default process group from the environment and wrap it."""
        rank, size = rank_and_size_from_environment()
        host, port = _rendezvous(rank, size)
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=timeout)
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()))))
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout)
        return cls(None, store)

    # ---- helpers ---------------------------------------------------------------------------
    def _global(self, group_rank: int) -> int:
        return group_rank if self._group is None else dist.get_global_rank(self._group, group_rank)

    def _child_channel(self) -> str:
        self._children += 1
        return f"{self._channel}.{self._children}"

    # ---- collectives -----------------------------------------------------------------------
    def _allreduce_sum_(self, t: torch.Tensor) -> None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self._group)

    def _iallreduce_sum_(self, t: torch.Tensor):
        work = dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self._group, async_op=True)
        return work.wait, None

    def _broadcast_(self, t: torch.Tensor, root: int) -> None:
        dist.broadcast(t, src=self._global(root), group=self._group)

    def _barrier(self) -> None:
        dist.barrier(group=self._group)

    def _allgather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    # ---- point to point --------------------------------------------------------------------
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None:
        dist.send(t, group=self._group, group_dst=dest, tag=tag)

    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int:
        if source is None:
            sender = dist.recv(t, group=self._group, tag=tag)
            return sender if self._group is None else dist.get_group_rank(self._group, sender)
        dist.recv(t, group=self._group, group_src=source, tag=tag)
        return source

    def _isend(self, t: torch.Tensor, dest: int, tag: int):
        work = dist.isend(t, group=self._group, group_dst=dest, tag=tag)
        return work.wait, None

    def _irecv(self, t: torch.Tensor, source: int, tag: int):
        work = dist.irecv(t, group=self._group, group_src=source, tag=tag)
        return work.wait, None

    # ---- structure and failure -------------------------------------------------------------
    def split(self, color: int | None, key: int | None = None) -> "TorchDistCommunicator | None":
        entries = self._allgather_object((color, self.rank if key is None else key, self._global(self.rank)))
        channel = self._child_channel()
        if color is None:
            return None
        members = [g for _, g in sorted((k, g) for c, k, g in entries if c == color)]
        # Local synchronization: only the members create the group, and torch names it from its ranks.
        group = dist.new_group(members, use_local_synchronization=True)
        mine = TorchDistCommunicator(group, self._store, f"{channel}.{color}")
        return mine

    def dup(self) -> "TorchDistCommunicator":
        dup = self.split(0)
        assert dup is not None
        return dup

    def heartbeats(self) -> HeartbeatChannel:
        if self._store is None:
            raise RuntimeError("heartbeats need the store created by TorchDistCommunicator.init()")
        self.barrier()
        return _StoreHeartbeats(self._store, f"kaldi_avg/hb/{self._child_channel()}", self.rank)

    def close(self) -> None:
        if self._group is not None:
            dist.destroy_process_group(self._group)
