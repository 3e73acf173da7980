"""The base class behind every algorithm, and what they share: clocks, logs, collective helpers.

Workers and replicas. A process owns `n_local` replicas (1 in real runs, N in the simulator); the
job has `n_workers = comm.size * n_local` workers, and local replica k of rank r is worker
`r * n_local + k`. Collective helpers first reduce the local replicas in order, then allreduce across
ranks, so a simulated run and a real run compute the same numbers.

The training driver's loop (kaldi_avg.train.iterations.AlgorithmWorkers), the same for every
algorithm; with one rank the `Simulator` calls the same hooks for all N workers of the process,
in its event clock's order:

    algo.load_carry_state(state)                   # resuming a run: before the first setup
    for each iteration:
        algo.begin_iteration(index, seed)          # new partner sequences; phase switches
        algo.setup([learner.replica, ...])         # makes every replica equal to worker 0's
        for each of the iteration's steps:
            frames = [learner.backward(), ...]     # SSGD's hooks may already be reducing buckets
            algo.after_backward(frames)            # gradient algorithms finish their reduction here
            with algo.local_update():              # held by the asynchronous gossip while it averages
                learner.update() for each learner  # the optimizer step (it also zeroes the gradients)
            algo.after_step(frames)                # periodic algorithms synchronize here when due
        algo.finalize()                            # every replica now holds the model to evaluate
        state = algo.carry_state()                 # what the next iteration keeps (saved for resume)

Synchronous algorithms need every rank to call after_step the same number of times between
synchronizations (the driver gives them equal step counts per iteration: `common_step_count`).
"""
from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .averaging import local_sum
from .comm import Communicator, flatten_tensors, unflatten_into
from .flat import Replica
from .options import DEFAULT, MANUAL, AlgorithmOptions

OPTIMIZER_STATE_POLICIES = ("keep", "average", "reset")


@dataclass
class CommEvent:
    """One logical communication, in the algorithm's terms (the simulator prices these)."""

    kind: str            # allreduce, broadcast, pairwise, server
    nbytes: int          # model-sized payload in bytes
    participants: int    # workers taking part
    blocking: bool       # whether the workers wait for it (False: overlapped by a comm thread)
    workers: tuple[int, ...] = ()  # local replicas whose clocks it delays (empty: all)


class CommLog:
    """Counts of logical communications by kind, plus the events not yet taken by the simulator."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bytes: Counter[str] = Counter()
        self.pending: list[CommEvent] = []
        self.staleness: Counter[int] = Counter()

    def record(self, event: CommEvent) -> None:
        self.calls[event.kind] += 1
        self.bytes[event.kind] += event.nbytes
        self.pending.append(event)

    def take(self) -> list[CommEvent]:
        events, self.pending = self.pending, []
        return events

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": dict(self.calls), "bytes": dict(self.bytes)}
        if self.staleness:
            total = sum(self.staleness.values())
            out["staleness"] = {"mean": sum(k * v for k, v in self.staleness.items()) / total,
                                "max": max(self.staleness), "histogram": dict(sorted(self.staleness.items()))}
        return out

    def state_dict(self) -> dict:
        return {"calls": dict(self.calls), "bytes": dict(self.bytes), "staleness": dict(self.staleness)}

    def load_state_dict(self, state: dict) -> None:
        self.calls, self.bytes = Counter(state["calls"]), Counter(state["bytes"])
        self.staleness = Counter(state["staleness"])


class PeriodClock:
    """Says, identically on every rank, when a synchronous algorithm's period has passed.

    The period is frames per worker. Ranks cannot see each other's frame counts without
    communicating, so the clock works in steps: steps_per_period = ceil(period / f), where f is the
    mean frames per worker-step agreed through one scalar allreduce at the first step and refreshed
    at every synchronization. With equal frames on all workers (fixed-size minibatches) this is
    exactly "sync once period frames have passed". Period 0 syncs every step; MANUAL never.
    """

    def __init__(self, period_frames: int | None) -> None:
        self.period_frames = period_frames
        self.steps = 0
        self.frames = 0.0            # summed over this rank's local replicas since the last sync
        self.steps_per_period: int | None = None

    def tick(self, local_frames: float) -> None:
        self.steps += 1
        self.frames += local_frames

    def due(self, global_sum: Callable[[float], float], n_workers: int) -> bool:
        if self.period_frames is MANUAL:
            return False
        if self.period_frames == 0:
            return True
        if self.steps_per_period is None:
            if self.steps == 0:
                return False
            self._agree_rate(global_sum(self.frames) / (n_workers * self.steps))
        assert self.steps_per_period is not None
        return self.steps >= self.steps_per_period

    def reset(self, global_sum: Callable[[float], float], n_workers: int) -> None:
        """At a synchronization: refresh the agreed rate from the frames of the period just ended."""
        if self.period_frames and self.steps:
            self._agree_rate(global_sum(self.frames) / (n_workers * self.steps))
        self.steps, self.frames = 0, 0.0

    def _agree_rate(self, frames_per_step: float) -> None:
        self.steps_per_period = max(1, math.ceil(self.period_frames / max(frames_per_step, 1e-9)))


class WorkerClock:
    """An asynchronous worker's own period: due once it has seen `period_frames` frames (0: every step)."""

    def __init__(self, period_frames: int | None) -> None:
        self.period_frames = period_frames
        self.frames = 0.0

    def tick(self, frames: float) -> bool:
        """Count a step's frames; True (and restart) when the period has passed."""
        self.frames += frames
        if self.period_frames is MANUAL or self.frames < self.period_frames:
            return False
        self.frames = 0.0
        return True


def common_step_count(comm: Communicator, local_steps: int) -> int:
    """The number of steps every rank can take this epoch (the minimum over ranks)."""
    return min(comm.allgather_object(int(local_steps)))


class Algorithm(ABC):
    """Base class: binds replicas, runs the hooks, carries state across iterations.

    Subclasses set `name`, `DEFAULT_PERIOD_FRAMES` (the paper's sync period, frames per worker) and
    `Options` (their frozen options dataclass, kaldi_avg.parallel.options), and override the hooks
    they need. The constructor takes an instance of `Options` (None: every default).
    """

    name: ClassVar[str] = ""
    DEFAULT_PERIOD_FRAMES: ClassVar[int | None] = 0
    Options: ClassVar[type[AlgorithmOptions]] = AlgorithmOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: AlgorithmOptions | None = None) -> None:
        if n_local < 1:
            raise ValueError("n_local must be at least 1")
        options = self.Options() if options is None else options
        if not isinstance(options, self.Options):
            raise TypeError(f"{self.name} takes {self.Options.__name__}, not {type(options).__name__}")
        self.options = options
        self.comm = comm
        self.n_local = n_local
        self.n_workers = comm.size * n_local
        self.first_worker = comm.rank * n_local
        self.period_frames = self.DEFAULT_PERIOD_FRAMES if options.period_frames is DEFAULT else options.period_frames
        self.seed = options.seed
        self.log = CommLog()
        self.replicas: list[Replica] = []
        self.hyperparameters: dict[str, Any] = {}

    # ---- what the simulator and the driver ask ---------------------------------------------
    @property
    def asynchronous(self) -> bool:
        """Whether workers step on their own clocks (the simulator then uses its event clock)."""
        return False

    def units(self) -> list[list[int]]:
        """Groups of local replicas that step together; synchronous algorithms: one group of all."""
        return [list(range(self.n_local))] if not self.asynchronous else [[k] for k in range(self.n_local)]

    def reference_params(self) -> torch.Tensor:
        """A copy of the model a run would output if it ended now, without disturbing it, as this
        rank sees it (for evaluating simulated runs, where one process holds every worker): the mean
        of the local replicas; algorithms that keep a global model return that."""
        return torch.stack(self.params).mean(0)

    def describe(self) -> dict[str, Any]:
        """The exact variant and hyperparameters, resolved defaults included (log it with results)."""
        return {"algorithm": self.name, "workers": self.n_workers, "ranks": self.comm.size,
                "period_frames": "manual" if self.period_frames is MANUAL else self.period_frames,
                "seed": self.seed, **self.hyperparameters}

    # ---- hooks -------------------------------------------------------------------------------
    def begin_iteration(self, iteration: int, seed: int) -> None:
        """The training driver starts iteration `iteration` (every rank, before `setup`): new partner
        sequences from `seed`; algorithms with phases switch here (post-local SGD)."""
        self.seed = seed

    def setup(self, replicas: Sequence[Replica]) -> None:
        """Bind the local replicas and make them all equal to worker 0's parameters."""
        if len(replicas) != self.n_local:
            raise ValueError(f"{self.name}: expected {self.n_local} local replicas, got {len(replicas)}")
        first = replicas[0].params
        for replica in replicas:
            p = replica.params
            if p.dim() != 1 or not p.is_contiguous():
                raise ValueError("replica parameters must be one flat contiguous tensor")
            if p.numel() != first.numel() or p.dtype != first.dtype or p.device != first.device:
                raise ValueError("all replicas must have the same size, dtype and device")
        self.replicas = list(replicas)
        self.broadcast_from_worker_(0)
        self._on_setup()

    def _on_setup(self) -> None:
        return None

    def after_backward(self, frames: int | Sequence[int] | None = None,
                       replicas: Sequence[int] | None = None) -> None:
        """Gradients of this step are in the replicas' grad buffers (params not yet updated)."""
        return None

    @abstractmethod
    def after_step(self, frames: int | Sequence[int], replicas: Sequence[int] | None = None) -> bool:
        """The local optimizers have stepped; returns True when a synchronization happened."""

    @abstractmethod
    def sync(self) -> None:
        """Synchronize now (collective for synchronous algorithms)."""

    @abstractmethod
    def finalize(self) -> None:
        """Collective: stop any communication threads and leave the reference model in every replica."""

    def local_update(self) -> AbstractContextManager[Any]:
        """Hold while applying the optimizer step (a comm thread may be averaging the same buffer)."""
        return contextlib.nullcontext()

    # ---- resume (at iteration boundaries) ----------------------------------------------------
    def carry_state(self) -> dict[str, Any]:
        """What survives `finalize()` -> `setup()`, the driver's iteration boundary (where every
        worker restarts from the reference model): the communication log, and phase switches."""
        return {"name": self.name, "n_workers": self.n_workers, "log": self.log.state_dict(), **self._carry()}

    def load_carry_state(self, state: dict[str, Any]) -> None:
        """Call before `setup()` when resuming at an iteration boundary."""
        self._check_state(state)
        self.log.load_state_dict(state["log"])
        self._load_carry(state)

    def _carry(self) -> dict[str, Any]:
        return {}

    def _load_carry(self, state: dict[str, Any]) -> None:
        return None

    def _check_state(self, state: dict[str, Any]) -> None:
        if state["name"] != self.name or state["n_workers"] != self.n_workers:
            raise ValueError(f"checkpoint is for {state['name']} with {state['n_workers']} workers, "
                             f"not {self.name} with {self.n_workers}")

    # ---- helpers for subclasses --------------------------------------------------------------
    @property
    def params(self) -> list[torch.Tensor]:
        return [replica.params for replica in self.replicas]

    @property
    def model_bytes(self) -> int:
        p = self.replicas[0].params
        return p.numel() * p.element_size()

    def _indices(self, replicas: Sequence[int] | None) -> list[int]:
        return list(range(self.n_local)) if replicas is None else list(replicas)

    @staticmethod
    def _frames_per_replica(frames: int | Sequence[int] | None, count: int) -> list[float]:
        if frames is None:
            return [0.0] * count
        if isinstance(frames, (int, float)):
            return [float(frames)] * count
        if len(frames) != count:
            raise ValueError(f"got {len(frames)} frame counts for {count} replicas")
        return [float(f) for f in frames]

    def _require_all(self, replicas: Sequence[int] | None) -> None:
        if replicas is not None and sorted(replicas) != list(range(self.n_local)):
            raise ValueError(f"{self.name} is synchronous: every local replica steps together")

    def global_scalar_sum(self, value: float) -> float:
        """Σ over ranks of `value` (a float64 allreduce of one element)."""
        if self.comm.size == 1:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        return float(self.comm.allreduce_sum_(t)[0])

    def global_sum(self, tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
        """Σ over all workers of wᵢ·tᵢ: local replicas in order, then an allreduce across ranks."""
        total = local_sum(tensors, weights)
        self.comm.allreduce_sum_(total)
        self.log.record(CommEvent("allreduce", self.model_bytes, self.n_workers, True))
        return total

    def global_mean(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.global_sum(tensors).div_(self.n_workers)

    def set_all_(self, value: torch.Tensor) -> None:
        for p in self.params:
            p.copy_(value)

    def broadcast_from_worker_(self, worker: int, field: str = "params") -> None:
        """Every replica ← worker `worker`'s `field` buffer (its parameters, or its statistics)."""
        owner, index = divmod(worker, self.n_local)
        buffers = [getattr(replica, field) for replica in self.replicas]
        source = buffers[index] if owner == self.comm.rank else torch.empty_like(buffers[0])
        if self.comm.size > 1:
            self.comm.broadcast_(source, owner)
            self.log.record(CommEvent("broadcast", source.numel() * source.element_size(), self.n_workers, True))
        for p in buffers:
            if p is not source:
                p.copy_(source)

    def apply_optimizer_state_policy(self, policy: str) -> None:
        """After a model synchronization: leave, average, or zero the local optimizers' state."""
        if policy == "keep":
            return
        states = [replica.optimizer_state() if replica.optimizer_state else [] for replica in self.replicas]
        if not any(states):
            return
        if policy == "reset":
            for state in states:
                for t in state:
                    t.zero_()
            return
        if policy != "average":
            raise ValueError(f"unknown optimizer-state policy {policy!r}; choose from {OPTIMIZER_STATE_POLICIES}")
        flats = [flatten_tensors(state) for state in states]
        average = local_sum(flats)
        self.comm.allreduce_sum_(average)
        average.div_(self.n_workers)
        self.log.record(CommEvent("allreduce", average.numel() * average.element_size(), self.n_workers, True))
        for state in states:
            unflatten_into(average, state)
