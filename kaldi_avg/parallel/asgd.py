"""ASGD with a parameter server on rank 0: Li et al.'s accumulated-delta form (Downpour with
n_push = n_fetch = period), optionally with server momentum (their MASGD) and Zhang et al.'s
staleness-aware step.

Each worker runs local SGD for `period_frames` frames, then pushes Δⁱ = θⁱ − θⁱ_prev; the server
applies θ_s ← θ_s + s·Δⁱ (or, with momentum μ, Δ_s ← μ·Δ_s + s·Δⁱ ; θ_s ← θ_s + Δ_s) and replies θ_s,
which the worker adopts as both θⁱ and θⁱ_prev. s = `asgd-scale` (Li et al.: 1.0), divided by the
staleness when `asgd-staleness-aware`. Staleness = server updates between a worker's pull and its
next push; its histogram is in `log.summary()`. Defaults: period 10,000 frames per worker (Li et al.'s
4-GPU LSTM recipe); period 0 is pure per-step ASGD. Use the single-worker learning rate (do not scale
it with N). `finalize()` pushes every worker's pending delta, then leaves θ_s in all replicas.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .averaging import staleness_scale
from .base import Algorithm, CommEvent, WorkerClock
from .comm import Communicator
from .options import AlgorithmOptions, option
from .server import ParameterServer, finish_with_server


@dataclass(frozen=True, kw_only=True)
class ASGDOptions(AlgorithmOptions):
    asgd_scale: float = option(1.0, "server step scale s on each pushed delta (Li et al.: 1.0)")
    asgd_momentum: float = option(0.0, "server momentum μ (Li et al.'s MASGD when > 0)")
    asgd_staleness_aware: bool = option(False, "divide each pushed delta by its staleness")


class ASGD(Algorithm):
    name = "asgd"
    DEFAULT_PERIOD_FRAMES = 10_000
    Options = ASGDOptions
    options: ASGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: ASGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.scale = o.asgd_scale
        self.momentum = o.asgd_momentum
        self.staleness_aware = o.asgd_staleness_aware
        self.worker_clocks = [WorkerClock(self.period_frames) for _ in range(n_local)]
        self.version = 0                                   # server updates so far (rank 0)
        self.pulled_version = [0] * self.n_workers         # per worker, at its last pull (rank 0)
        self.server: ParameterServer | None = None
        self.hyperparameters = {"scale": o.asgd_scale, "momentum": o.asgd_momentum,
                                "staleness_aware": o.asgd_staleness_aware}

    @property
    def asynchronous(self) -> bool:
        return True

    def _on_setup(self) -> None:
        p = self.params[0]
        self.server_model = p.clone()                      # θ_s (authoritative on rank 0)
        self.server_velocity = torch.zeros_like(p)         # Δ_s
        self.previous = [q.clone() for q in self.params]   # θⁱ_prev
        self.server = ParameterServer(self.comm, self._server_rule, p.numel(), p.dtype, p.device)

    def after_step(self, frames, replicas=None) -> bool:
        indices = self._indices(replicas)
        pushed = False
        for k, f in zip(indices, self._frames_per_replica(frames, len(indices))):
            if self.worker_clocks[k].tick(f):
                self._push_pull(k)
                pushed = True
        return pushed

    def sync(self) -> None:
        """Every local worker pushes its accumulated delta and pulls θ_s now."""
        for k in range(self.n_local):
            self._push_pull(k)

    def reference_params(self) -> torch.Tensor:
        return self.server_model.clone()

    def finalize(self) -> None:
        assert self.server is not None
        finish_with_server(self, self.server, self.server_model, self._push_pull)

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # `finalize()` pushes the pending deltas without restarting the worker clocks, so the frames
        # counted since each worker's last clocked push move its next push into the next iteration;
        # the server's update count and each worker's version at its last pull give the staleness
        # of those pushes (rank 0's; other ranks carry theirs unused).
        return {"worker_frames": [clock.frames for clock in self.worker_clocks],
                "version": self.version, "pulled_version": list(self.pulled_version)}

    def _load_carry(self, state: dict[str, Any]) -> None:
        if len(state["worker_frames"]) != self.n_local:
            raise ValueError(f"checkpoint has {len(state['worker_frames'])} local workers, not {self.n_local}")
        for clock, frames in zip(self.worker_clocks, state["worker_frames"]):
            clock.frames = float(frames)
        self.version = int(state["version"])
        self.pulled_version = [int(v) for v in state["pulled_version"]]

    def _server_rule(self, worker: int, delta: torch.Tensor) -> torch.Tensor:
        staleness = self.version - self.pulled_version[worker]
        self.log.staleness[staleness] += 1
        step = self.scale * (staleness_scale(staleness) if self.staleness_aware else 1.0)
        if self.momentum:
            self.server_velocity.mul_(self.momentum).add_(delta, alpha=step)
            self.server_model.add_(self.server_velocity)
        else:
            self.server_model.add_(delta, alpha=step)
        self.version += 1
        self.pulled_version[worker] = self.version
        return self.server_model.clone()

    def _push_pull(self, k: int) -> None:
        assert self.server is not None
        delta = self.params[k] - self.previous[k]
        fresh = self.server.request(self.first_worker + k, delta)
        self.params[k].copy_(fresh)
        self.previous[k].copy_(fresh)
        self.log.record(CommEvent("server", 2 * self.model_bytes, 2, True, (k,)))
