"""torch.distributed backend: gloo process groups (and nccl for CUDA collectives when requested).

Rank and size come from the launcher's environment (mpiexec's PMI_RANK/PMI_SIZE, Open MPI's
OMPI_COMM_WORLD_*, or torchrun's RANK/WORLD_SIZE). The rendezvous address is MASTER_ADDR/MASTER_PORT;
when those are unset and mpi4py is importable, rank 0 picks a free port and tells the others over MPI.

Process groups are built directly on a key-value store under prefixes of our own, not through
`init_process_group`/`new_group`: torch names a group after its member ranks, so a second group with
the same members (a `dup()` for a communication thread) would collide with the first. This also
leaves the global torch.distributed state to the caller. Gloo carries CPU tensors; CUDA tensors go
through nccl for allreduce and broadcast when the backend is "nccl", and are staged through host
memory otherwise (point to point always, since gloo cannot receive from any source on a GPU).
"""
from __future__ import annotations

import datetime
import os
import pickle
import socket
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..atomic import write_text
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


def _wait_for_address(path: str, timeout_s: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank 0 did not write the rendezvous file {path} within {timeout_s:.0f} s")
        time.sleep(0.1)
    with open(path) as f:
        host, port = f.read().split()
    return host, int(port)


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
    """`size` ranks joined through the store at `store_address`, under `prefix`."""

    def __init__(self, store_address: tuple[str, int], rank: int, size: int, timeout: datetime.timedelta,
                 prefix: str = "kaldi_avg/world", use_nccl: bool = False, store: dist.Store | None = None) -> None:
        super().__init__(rank, size)
        self._store_address = store_address
        self._store = store if store is not None else self._connect()
        self._timeout = timeout
        self._prefix = prefix
        self._use_nccl = use_nccl
        self._children = 0
        self._pg = dist.ProcessGroupGloo(dist.PrefixStore(f"{prefix}/gloo/", self._store), rank, size, timeout)
        self._nccl = None
        if use_nccl:
            self._nccl = dist.ProcessGroupNCCL(dist.PrefixStore(f"{prefix}/nccl/", self._store), rank, size)

    @classmethod
    def init(cls, backend: str | None = None, timeout_s: float = 300.0) -> TorchDistCommunicator:
        """Join the job described by the environment; backend "gloo", "nccl" or None (nccl with CUDA)."""
        rank, size = rank_and_size_from_environment()
        host, port = _rendezvous(rank, size)
        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.TCPStore(host, port, size, is_master=rank == 0, timeout=timeout)
        return cls._with_backend((host, port), rank, size, timeout, store, backend)

    @classmethod
    def _with_backend(cls, address: tuple[str, int], rank: int, size: int, timeout: datetime.timedelta,
                      store: dist.Store, backend: str | None) -> TorchDistCommunicator:
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"unknown torch.distributed backend {backend!r} (gloo or nccl)")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()))))
        return cls(address, rank, size, timeout, use_nccl=backend == "nccl", store=store)

    @classmethod
    def from_rendezvous_file(cls, path: str, rank: int, size: int, backend: str | None = None,
                             timeout_s: float = 300.0) -> TorchDistCommunicator:
        """Ranks started without a launcher's environment (a Kaldi `$cmd JOB=1:N` array job) meet
        through `path` on a shared file system: rank 0 serves the store and writes its address there,
        the others wait for the file and connect."""
        timeout = datetime.timedelta(seconds=timeout_s)
        if rank == 0:
            host, port = socket.gethostname(), _free_port()
            store = dist.TCPStore(host, port, size, is_master=True, timeout=timeout, wait_for_workers=False)
            write_text(path, f"{host} {port}\n")
        else:
            host, port = _wait_for_address(path, timeout_s)
            store = dist.TCPStore(host, port, size, is_master=False, timeout=timeout)
        return cls._with_backend((host, port), rank, size, timeout, store, backend)

    def _connect(self) -> dist.Store:
        host, port = self._store_address
        return dist.TCPStore(host, port, is_master=False, wait_for_workers=False)

    # ---- tensors on the right side of the wire -----------------------------------------------
    @staticmethod
    def _on_host(t: torch.Tensor) -> tuple[torch.Tensor, Callable[[], Any] | None]:
        if t.device.type == "cpu":
            return t, None
        host = t.detach().to("cpu")
        return host, (lambda: t.copy_(host))

    def _collective_group(self, t: torch.Tensor):
        return self._nccl if (self._nccl is not None and t.is_cuda) else self._pg

    # ---- collectives -----------------------------------------------------------------------
    def _allreduce_sum_(self, t: torch.Tensor) -> None:
        wait, then = self._iallreduce_sum_(t)
        wait()
        if then:
            then()

    def _iallreduce_sum_(self, t: torch.Tensor):
        group = self._collective_group(t)
        buf, back = (t, None) if group is self._nccl else self._on_host(t)
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.SUM
        work = group.allreduce([buf], opts)
        return work.wait, back

    def _broadcast_(self, t: torch.Tensor, root: int) -> None:
        group = self._collective_group(t)
        buf, back = (t, None) if group is self._nccl else self._on_host(t)
        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor = root, 0
        group.broadcast([buf], opts).wait()
        if back:
            back()

    def _barrier(self) -> None:
        self._pg.barrier().wait()

    def _allgather_object(self, obj: Any) -> list[Any]:
        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        self._pg.allgather([sizes], [torch.tensor([data.numel()])]).wait()
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[:data.numel()] = data
        out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.size)]
        self._pg.allgather([out], [padded]).wait()
        return [pickle.loads(o[:int(s.item())].numpy().tobytes()) for o, s in zip(out, sizes)]

    # ---- point to point --------------------------------------------------------------------
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None:
        buf, _ = self._on_host(t)
        self._pg.send([buf], dest, tag).wait()

    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int:
        buf, back = self._on_host(t)
        work = self._pg.recv_anysource([buf], tag) if source is None else self._pg.recv([buf], source, tag)
        work.wait()
        if back:
            back()
        return int(work._source_rank()) if source is None else source

    def _isend(self, t: torch.Tensor, dest: int, tag: int):
        buf, _ = self._on_host(t)
        work = self._pg.send([buf], dest, tag)
        return (lambda: (work.wait(), buf)), None

    def _irecv(self, t: torch.Tensor, source: int, tag: int):
        buf, back = self._on_host(t)
        work = self._pg.recv([buf], source, tag)
        return work.wait, back

    # ---- structure ---------------------------------------------------------------------------
    def _child_prefix(self) -> str:
        self._children += 1
        return f"{self._prefix}.{self._children}"

    def split(self, color: int | None, key: int | None = None) -> TorchDistCommunicator | None:
        entries = self._allgather_object((color, self.rank if key is None else key, self.rank))
        prefix = self._child_prefix()
        if color is None:
            return None
        members = [rank for _, rank in sorted((k, r) for c, k, r in entries if c == color)]
        return TorchDistCommunicator(self._store_address, members.index(self.rank), len(members),
                                     self._timeout, f"{prefix}/{color}", self._use_nccl, self._store)

    def dup(self) -> TorchDistCommunicator:
        dup = self.split(0)
        assert dup is not None
        return dup

    def heartbeats(self) -> HeartbeatChannel:
        prefix = self._child_prefix()
        self.barrier()
        # A store connection of its own: the watchdog thread must not share the main thread's.
        return _StoreHeartbeats(self._connect(), f"{prefix}/heartbeats", self.rank)
