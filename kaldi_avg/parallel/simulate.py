"""N logical workers in one process, with the real update rules and a deterministic event clock.

The algorithm runs with a `LocalCommunicator` and one replica per worker, so every collective it
performs is the exact local computation a real run would do across ranks. Time is simulated: each
worker's step takes a duration drawn (seeded, per worker) from `StepTime`, where stragglers are slowed
workers; communication is charged with the α–β `CostModel` of docs/algorithms.md 4.1, with a FIFO queue
at the parameter server. Synchronous algorithms have one unit of all workers, whose step lasts as long
as its slowest member; asynchronous algorithms give each worker (H-ADPSGD: each group) its own clock,
and events are processed in time order (ties by unit index), so runs are reproducible. A step's
gradient is computed at the start of the step from the parameters at that moment and applied at its
end, as the asynchronous algorithms' analyses assume.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .base import Algorithm, CommEvent
from .flat import Replica


class Learner(Protocol):
    """One simulated worker: its replica, a way to compute gradients and a way to step."""

    replica: Replica

    def backward(self) -> int:
        """Compute the next minibatch's gradients into `replica.grads`; return its frame count."""

    def update(self) -> None:
        """Apply the local optimizer step from `replica.grads`."""


@dataclass
class StepTime:
    """Step duration of each worker: `mean_s` × lognormal jitter (mean 1) × its slowdown factor."""

    mean_s: float = 1.0
    jitter: float = 0.1
    slowdown: Mapping[int, float] = field(default_factory=dict)

    def sample(self, worker: int, rng: np.random.Generator) -> float:
        factor = rng.lognormal(-0.5 * self.jitter ** 2, self.jitter) if self.jitter > 0 else 1.0
        return self.mean_s * self.slowdown.get(worker, 1.0) * factor


@dataclass
class CostModel:
    """α–β costs: latency `alpha_s`, `seconds_per_byte` = 1/bandwidth (0, 0: free communication)."""

    alpha_s: float = 0.0
    seconds_per_byte: float = 0.0
    server_seconds_per_byte: float | None = None  # the server's link; default: the same

    def seconds(self, event: CommEvent) -> float:
        n, m = event.participants, event.nbytes
        if n <= 1:
            return 0.0
        a, b = self.alpha_s, self.seconds_per_byte
        if event.kind == "allreduce":     # ring: 2(n−1)α + 2(n−1)/n·M·β
            return 2 * (n - 1) * a + 2 * (n - 1) / n * m * b
        if event.kind == "broadcast":     # binomial tree
            return math.ceil(math.log2(n)) * (a + m * b)
        if event.kind == "pairwise":      # full-duplex exchange
            return a + m * b
        if event.kind == "server":        # push + pull, without queueing (see Simulator)
            return 2 * a + m * self.server_beta
        raise ValueError(f"no cost for communication kind {event.kind!r}")

    @property
    def server_beta(self) -> float:
        return self.seconds_per_byte if self.server_seconds_per_byte is None else self.server_seconds_per_byte


@dataclass
class SimulationReport:
    wall_time_s: float
    steps: list[int]
    frames: list[float]
    comm_seconds: float
    server_wait_s: float
    comm: dict[str, Any]
    algorithm: dict[str, Any]


Observer = Callable[[float, Sequence[int], Sequence[int]], None]


class Simulator:
    """Runs `algorithm` (built with a LocalCommunicator and n_local = len(learners)) on `learners`."""

    def __init__(self, algorithm: Algorithm, learners: Sequence[Learner], step_time: StepTime | None = None,
                 cost: CostModel | None = None, seed: int = 0) -> None:
        if algorithm.comm.size != 1 or algorithm.n_local != len(learners):
            raise ValueError("simulate with a LocalCommunicator and one replica per learner")
        self.algorithm = algorithm
        self.learners = list(learners)
        self.step_time = step_time or StepTime()
        self.cost = cost or CostModel()
        self.rngs = [np.random.default_rng([seed, worker]) for worker in range(len(learners))]
        self.time = 0.0
        self.steps = [0] * len(learners)
        self.frames = [0.0] * len(learners)
        self.comm_seconds = 0.0
        self.server_wait_s = 0.0
        self._server_free_at = 0.0
        algorithm.setup([learner.replica for learner in learners])

    def run(self, steps: int | None = None, until_s: float | None = None,
            observer: Observer | None = None, finalize: bool = True) -> SimulationReport:
        """Every unit takes `steps` steps (or steps while its clock is below `until_s`). After each
        step, `observer(time, workers_that_stepped, steps_per_worker)` is called."""
        if steps is None and until_s is None:
            raise ValueError("give a number of steps, a simulated time, or both")
        units = self.algorithm.units()
        queue: list[tuple[float, int]] = []
        started: dict[int, tuple[float, list[int]]] = {}
        done = [0] * len(units)

        def start(u: int, now: float) -> None:
            if (steps is not None and done[u] >= steps) or (until_s is not None and now >= until_s):
                return
            unit = units[u]
            frames = [self.learners[k].backward() for k in unit]
            duration = max(self.step_time.sample(k, self.rngs[k]) for k in unit)
            started[u] = (now, frames)
            heapq.heappush(queue, (now + duration, u))

        for u in range(len(units)):
            start(u, self.time)
        while queue:
            now, u = heapq.heappop(queue)
            unit = units[u]
            _, frames = started.pop(u)
            self.algorithm.after_backward(frames, unit)
            now += self._charge(self.algorithm.log.take(), now)
            for k in unit:
                self.learners[k].update()
            self.algorithm.after_step(frames, unit)
            now += self._charge(self.algorithm.log.take(), now)
            done[u] += 1
            for k, f in zip(unit, frames):
                self.steps[k] += 1
                self.frames[k] += f
            self.time = max(self.time, now)
            if observer is not None:
                observer(now, unit, self.steps)
            start(u, now)
        if finalize:   # the final synchronization costs simulated time like any other
            self.algorithm.finalize()
            self.time += self._charge(self.algorithm.log.take(), self.time)
        return SimulationReport(self.time, list(self.steps), list(self.frames), self.comm_seconds,
                                self.server_wait_s, self.algorithm.log.summary(), self.algorithm.describe())

    def _charge(self, events: list[CommEvent], now: float) -> float:
        """Blocking time of the unit: collectives add up; per-worker events add up per worker and
        the slowest worker sets the delay; server requests also wait for the server to be free."""
        collective = 0.0
        per_worker: dict[int, float] = {}
        for event in events:
            if not event.blocking:
                continue
            seconds = self.cost.seconds(event)
            if event.kind == "server":
                service = event.nbytes * self.cost.server_beta
                begin = max(now, self._server_free_at)
                self._server_free_at = begin + service
                self.server_wait_s += begin - now
                seconds += begin - now
            if event.workers:
                for k in event.workers:
                    per_worker[k] = per_worker.get(k, 0.0) + seconds
            else:
                collective += seconds
        delay = collective + max(per_worker.values(), default=0.0)
        self.comm_seconds += delay
        return delay
