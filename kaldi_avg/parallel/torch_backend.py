"""torch.distributed backend: gloo process groups (and nccl for CUDA collectives when requested).

Rank and size come from the launcher's environment (mpiexec's PMI_RANK/PMI_SIZE, Open MPI's
OMPI_COMM_WORLD_*, or torchrun's RANK/WORLD_SIZE). The rendezvous address is MASTER_ADDR/MASTER_PORT;
when those are unset and mpi4py is importable, rank 0 picks a free port and tells the others over MPI.
Ranks of a Kaldi array job meet through a rendezvous file instead (`from_rendezvous_file`).

Waiting for the other ranks is bounded and said: after `ANNOUNCE_AFTER_S` a rank prints once what it
waits for ("waiting for 1 more rank(s) at HOST:PORT (timeout N s)"), and after the timeout
(KALDI_AVG_RENDEZVOUS_TIMEOUT seconds, default 300) it stops with a `RendezvousError`, one line
naming the missing ranks.

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
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from ..atomic import atomic_path
from ..errors import UsageError
from .comm import CommAborted, Communicator, HeartbeatChannel

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


TIMEOUT_VARIABLE = "KALDI_AVG_RENDEZVOUS_TIMEOUT"
ANNOUNCE_AFTER_S = 2.0   # ranks that meet within this say nothing
LOOPBACK = "127.0.0.1"


class RendezvousError(UsageError):
    """The ranks did not all meet: one line naming who is missing and where they were awaited."""


# gloo's words when the other end of a pair is gone (its process ended: killed, crashed, aborted)
PEER_LOST = re.compile(r"Connection (closed|reset) by peer|Broken pipe|Socket closed")


class PeerLost(CommAborted):
    """A communication call failed because another rank's process ended. Not this rank's failure:
    the rank that ended reports (its exit monitor, its own error), so this one is no verdict."""


def _wait(work) -> None:
    try:
        work.wait()
    except RuntimeError as error:   # torch's DistError and its kind
        if PEER_LOST.search(str(error)):
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise PeerLost(f"lost the connection to another rank, which ended ({first})") from None
        raise


def rendezvous_timeout_s(default: float) -> float:
    """KALDI_AVG_RENDEZVOUS_TIMEOUT (seconds) when set, else `default`."""
    value = os.environ.get(TIMEOUT_VARIABLE)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise RendezvousError(f"{TIMEOUT_VARIABLE}={value!r}: expected a number of seconds above 0")
    return seconds


def _say(message: str) -> None:
    print(f"kaldi_avg.parallel: {message}", file=sys.stderr, flush=True)


def _open_store(host: str, port: int, rank: int, size: int, timeout: datetime.timedelta, join_s: float,
                listen_fd: int | None = None) -> dist.TCPStore:
    """Rank 0 serves the store (on `listen_fd` when given: a socket bound to one interface); the
    others connect, waiting at most `join_s` (said after ANNOUNCE_AFTER_S) for it to answer."""
    if rank == 0:
        store = dist.TCPStore(host, port, size, is_master=True, timeout=timeout, wait_for_workers=False,
                              master_listen_fd=listen_fd)
        store.set_timeout(timeout)
        return store
    where = f"{host}:{port}"
    announce = threading.Timer(ANNOUNCE_AFTER_S, _say, [f"rank {rank}/{size}: waiting for rank 0's store at "
                                                        f"{where} (timeout {join_s:.0f} s)"])
    announce.daemon = True
    announce.start()
    try:
        store = dist.TCPStore(host, port, size, is_master=False, timeout=datetime.timedelta(seconds=join_s),
                              wait_for_workers=False)
    except (RuntimeError, TimeoutError):   # torch's DistNetworkError, DistStoreError
        raise RendezvousError(f"rank {rank}/{size}: nothing answered at {where} within {join_s:.0f} s: rank 0 "
                              f"did not start, or {where} is not reachable from {socket.gethostname()}") from None
    finally:
        announce.cancel()
    store.set_timeout(timeout)   # from now on the collectives' timeout, not the join's
    return store


def _join(store: dist.Store, rank: int, size: int, where: str, join_s: float) -> None:
    """Wait until all `size` ranks have reached this point through `store`; bounded and said."""
    key = "kaldi_avg/joined" + (f".{os.environ['TORCHELASTIC_RESTART_COUNT']}"
                                if "TORCHELASTIC_RESTART_COUNT" in os.environ else "")
    store.set(f"{key}/{rank}", socket.gethostname())
    joined = store.add(key, 1)
    start, announced = time.monotonic(), False
    while joined < size:
        waited = time.monotonic() - start
        if not announced and waited >= ANNOUNCE_AFTER_S:
            _say(f"rank {rank}/{size}: waiting for {size - joined} more rank(s) at {where} (timeout {join_s:.0f} s)")
            announced = True
        if waited > join_s:
            missing = [r for r in range(size) if not store.check([f"{key}/{r}"])]
            raise RendezvousError(f"rank {rank}/{size}: rank(s) {', '.join(map(str, missing))} of {size} did not "
                                  f"join at {where} within {join_s:.0f} s (not started, or cannot reach it)")
        time.sleep(0.1)
        joined = store.add(key, 0)


def _host_address() -> str:
    """This host's address as other nodes reach it: its name's address or, when that is a loopback
    address (127.0.1.1 in Debian's /etc/hosts), the source address of its default route (connecting
    a UDP socket only chooses the route; nothing is sent)."""
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = LOOPBACK
    if not address.startswith("127."):
        return address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))   # TEST-NET-1 (RFC 5737)
            return probe.getsockname()[0]
        except OSError:
            return address


def read_rendezvous(path: str) -> dict[str, str]:
    """The rendezvous file's `key value` lines (secret, bind, address)."""
    try:
        with open(path) as f:
            return dict(line.split(" ", 1) for line in f.read().splitlines() if " " in line)
    except FileNotFoundError:
        return {}


def write_rendezvous(path: str, fields: dict[str, str]) -> None:
    """Atomically, readable by its owner only (mode 0600): it holds the run's secret."""
    with atomic_path(path, mode=0o600) as tmp, open(tmp, "w") as f:
        f.write("".join(f"{k} {v}\n" for k, v in fields.items()))


def new_rendezvous(path: str, local: bool) -> None:
    """The launcher's half of the file: a fresh per-run secret, and where rank 0 binds its store
    (loopback when every rank runs on this host, else this host's address)."""
    write_rendezvous(path, {"secret": secrets.token_hex(16), "bind": LOOPBACK if local else "host"})


def _wait_for_address(path: str, rank: int, size: int, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    announce_at = time.monotonic() + ANNOUNCE_AFTER_S
    while "address" not in (fields := read_rendezvous(path)):
        if time.monotonic() > announce_at:
            _say(f"rank {rank}/{size}: waiting for rank 0 to write its address into {path} (timeout {timeout_s:.0f} s)")
            announce_at = float("inf")
        if time.monotonic() > deadline:
            raise RendezvousError(f"rank {rank}/{size}: rank 0 did not write its address into the rendezvous file "
                                  f"{path} within {timeout_s:.0f} s (not started, or that directory is not shared)")
        time.sleep(0.1)
    return fields


class _StoreHeartbeats(HeartbeatChannel):
    """Heartbeats as store keys: `post` overwrites dest's slot for us, `drain` reads ours from source.
    A store that cannot be reached (rank 0, its server, ended) carries no heartbeat: silence, which
    the watchdog judges, not an error of this rank."""

    def __init__(self, store: dist.Store, prefix: str, rank: int) -> None:
        self._store, self._prefix, self._rank = store, prefix, rank
        self._sequence = 0
        self._seen: dict[int, int] = {}

    def _key(self, dest: int, source: int) -> str:
        return f"{self._prefix}/{dest}/{source}"

    def post(self, dest: int, payload: tuple[float, float]) -> None:
        self._sequence += 1
        try:
            self._store.set(self._key(dest, self._rank), f"{self._sequence} {payload[0]!r} {payload[1]!r}")
        except RuntimeError:   # torch's DistNetworkError, DistStoreError
            pass

    def drain(self, source: int) -> list[tuple[float, float]]:
        key = self._key(self._rank, source)
        try:
            if not self._store.check([key]):
                return []
            sequence, state, progress = self._store.get(key).decode().split()
        except RuntimeError:
            return []
        if self._seen.get(source) == int(sequence):
            return []
        self._seen[source] = int(sequence)
        return [(float(state), float(progress))]


class TorchDistCommunicator(Communicator):
    """`size` ranks joined through the store at `store_address`, under `prefix`; with `namespace`
    (the rendezvous file's secret) every key lives below it, and with `bind` gloo listens on that
    address only."""

    def __init__(self, store_address: tuple[str, int], rank: int, size: int, timeout: datetime.timedelta,
                 prefix: str = "kaldi_avg/world", use_nccl: bool = False, store: dist.Store | None = None,
                 namespace: str = "", bind: str | None = None) -> None:
        super().__init__(rank, size)
        self._store_address = store_address
        self._namespace = namespace
        self._bind = bind
        self._store = store if store is not None else self._connect()
        self._timeout = timeout
        self._prefix = prefix
        self._use_nccl = use_nccl
        self._children = 0
        gloo_store = dist.PrefixStore(f"{prefix}/gloo/", self._store)
        if bind is None:
            self._pg = dist.ProcessGroupGloo(gloo_store, rank, size, timeout)
        else:
            options = dist.ProcessGroupGloo._Options()
            options._devices = [dist.ProcessGroupGloo.create_device(hostname=bind)]
            options._timeout = timeout
            self._pg = dist.ProcessGroupGloo(gloo_store, rank, size, options)
        self._nccl = None
        if use_nccl:
            self._nccl = dist.ProcessGroupNCCL(dist.PrefixStore(f"{prefix}/nccl/", self._store), rank, size)

    @classmethod
    def init(cls, backend: str | None = None, timeout_s: float = 300.0) -> TorchDistCommunicator:
        """Join the job described by the environment; backend "gloo", "nccl" or None (nccl with CUDA).
        Waiting for the other ranks is bounded by KALDI_AVG_RENDEZVOUS_TIMEOUT (default `timeout_s`)."""
        rank, size = rank_and_size_from_environment()
        join_s = rendezvous_timeout_s(timeout_s)
        host, port = _rendezvous(rank, size)
        timeout = datetime.timedelta(seconds=timeout_s)
        store = _open_store(host, port, rank, size, timeout, join_s)
        _join(store, rank, size, f"{host}:{port}", join_s)
        return cls._with_backend((host, port), rank, size, timeout, store, backend)

    @classmethod
    def _with_backend(cls, address: tuple[str, int], rank: int, size: int, timeout: datetime.timedelta,
                      store: dist.Store, backend: str | None, namespace: str = "",
                      bind: str | None = None) -> TorchDistCommunicator:
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"unknown torch.distributed backend {backend!r} (gloo or nccl)")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % max(1, torch.cuda.device_count()))))
        return cls(address, rank, size, timeout, use_nccl=backend == "nccl", store=store, namespace=namespace,
                   bind=bind)

    @classmethod
    def from_rendezvous_file(cls, path: str, rank: int, size: int, backend: str | None = None,
                             timeout_s: float = 300.0) -> TorchDistCommunicator:
        """Ranks started without a launcher's environment (a Kaldi `$cmd JOB=1:N` array job) meet
        through `path` on a shared file system (mode 0600: only the experiment directory's owner reads
        it). The launcher wrote a per-run secret there and where to bind (`new_rendezvous`); rank 0
        serves the store on that address only (loopback when every rank is on its host) and adds its
        address; the others wait for it and connect. Every key lives below the secret, so a process
        that cannot read the file can neither join the run nor read or write its keys."""
        timeout = datetime.timedelta(seconds=timeout_s)
        join_s = rendezvous_timeout_s(timeout_s)
        if rank == 0:
            fields = read_rendezvous(path)
            if "secret" not in fields:   # an array job started by hand: rank 0 makes the file
                fields = {"secret": secrets.token_hex(16), "bind": "host"}
            host = fields.get("bind", "host")
            host = _host_address() if host == "host" else host
            listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, 0))
            listener.listen(1024)
            port = listener.getsockname()[1]
            store = _open_store(host, port, rank, size, timeout, join_s, listen_fd=listener.detach())
            write_rendezvous(path, {**fields, "address": f"{host} {port}"})
        else:
            fields = _wait_for_address(path, rank, size, join_s)
            host, port_text = fields["address"].split()
            port = int(port_text)
            store = _open_store(host, port, rank, size, timeout, join_s)
        namespace = f"kaldi_avg/{fields['secret']}/"
        store = dist.PrefixStore(namespace, store)
        bind = LOOPBACK if fields.get("bind") == LOOPBACK else _host_address()   # gloo's listening address
        _join(store, rank, size, f"{host}:{port}", join_s)
        return cls._with_backend((host, port), rank, size, timeout, store, backend, namespace, bind)

    def _connect(self) -> dist.Store:
        host, port = self._store_address
        store = dist.TCPStore(host, port, is_master=False, wait_for_workers=False)
        return dist.PrefixStore(self._namespace, store) if self._namespace else store

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
        return (lambda: _wait(work)), back

    def _broadcast_(self, t: torch.Tensor, root: int) -> None:
        group = self._collective_group(t)
        buf, back = (t, None) if group is self._nccl else self._on_host(t)
        opts = dist.BroadcastOptions()
        opts.rootRank, opts.rootTensor = root, 0
        _wait(group.broadcast([buf], opts))
        if back:
            back()

    def _barrier(self) -> None:
        _wait(self._pg.barrier())

    def _allgather_object(self, obj: Any) -> list[Any]:
        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.size)]
        _wait(self._pg.allgather([sizes], [torch.tensor([data.numel()])]))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[:data.numel()] = data
        out = [torch.empty(longest, dtype=torch.uint8) for _ in range(self.size)]
        _wait(self._pg.allgather([out], [padded]))
        return [pickle.loads(o[:int(s.item())].numpy().tobytes()) for o, s in zip(out, sizes)]

    # ---- point to point --------------------------------------------------------------------
    def _send(self, t: torch.Tensor, dest: int, tag: int) -> None:
        buf, _ = self._on_host(t)
        _wait(self._pg.send([buf], dest, tag))

    def _recv(self, t: torch.Tensor, source: int | None, tag: int) -> int:
        buf, back = self._on_host(t)
        work = self._pg.recv_anysource([buf], tag) if source is None else self._pg.recv([buf], source, tag)
        _wait(work)
        if back:
            back()
        return int(work._source_rank()) if source is None else source

    def _isend(self, t: torch.Tensor, dest: int, tag: int):
        buf, _ = self._on_host(t)
        work = self._pg.send([buf], dest, tag)
        return (lambda: (_wait(work), buf)), None

    def _irecv(self, t: torch.Tensor, source: int, tag: int):
        buf, back = self._on_host(t)
        work = self._pg.recv([buf], source, tag)
        return (lambda: _wait(work)), back

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
                                     self._timeout, f"{prefix}/{color}", self._use_nccl, self._store,
                                     self._namespace, self._bind)

    def dup(self) -> TorchDistCommunicator:
        dup = self.split(0)
        assert dup is not None
        return dup

    def heartbeats(self) -> HeartbeatChannel:
        prefix = self._child_prefix()
        self.barrier()
        # A store connection of its own: the watchdog thread must not share the main thread's.
        return _StoreHeartbeats(self._connect(), f"{prefix}/heartbeats", self.rank)
