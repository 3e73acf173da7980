"""EASGD: elastic averaging SGD (Zhang, Choromanska & LeCun, NIPS 2015), synchronous and asynchronous.

Workers are tied to a centre variable x̃ by an elastic force of moving rate α = β/N. Both variants
apply the elastic step at the point where the step's gradient was computed (after backward, before
the optimizer), from pre-update values, as in the paper:

* synchronous (default): every τ = period, with x̄ the workers' mean (one allreduce) and x̃ replicated
  on every rank:  xⁱ ← xⁱ − α(xⁱ − x̃) ;  x̃ ← (1 − β)·x̃ + β·x̄.
* asynchronous (`easgd-async`): each worker, on its own clock, exchanges with the centre held by a
  server on rank 0 (Li et al.'s symmetric MPI_Sendrecv form, both sides using pre-exchange values):
  e = α(xⁱ − x̃) ;  xⁱ ← xⁱ − e ;  x̃ ← x̃ + e.

Defaults: β = 0.9 so α = 0.9/N (the paper; keep β fixed as N changes), period 25,600 frames per worker
(Li et al.'s exchange period; the paper's τ ∈ {1, 4, 16, 64} steps). Li et al. used α = 0.5 with
2-4 GPUs (`easgd-alpha 0.5`). The reference model after `finalize()` is the centre x̃.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .averaging import centre_update_, elastic_difference
from .base import Algorithm, CommEvent, PeriodClock, WorkerClock
from .comm import Communicator
from .options import AlgorithmOptions, option
from .server import ParameterServer, finish_with_server


@dataclass(frozen=True, kw_only=True)
class EASGDOptions(AlgorithmOptions):
    easgd_beta: float = option(0.9, "β = N·α, the total elastic strength (paper: 0.9)")
    easgd_alpha: float | None = option(None, "moving rate α (default β/N; Li et al.: 0.5)")
    easgd_async: bool = option(False, "asynchronous EASGD with the centre on a rank-0 server")


class EASGD(Algorithm):
    name = "easgd"
    DEFAULT_PERIOD_FRAMES = 25_600
    Options = EASGDOptions
    options: EASGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: EASGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.alpha = o.easgd_beta / self.n_workers if o.easgd_alpha is None else o.easgd_alpha
        self.beta = self.n_workers * self.alpha
        self.async_mode = o.easgd_async
        self.clock = PeriodClock(self.period_frames)
        self.worker_clocks = [WorkerClock(self.period_frames) for _ in range(n_local)]
        self.exchange_due = [self.period_frames == 0] * n_local
        self.synced_this_step = False
        self.server: ParameterServer | None = None
        self.hyperparameters = {"alpha": self.alpha, "beta": self.beta, "async": o.easgd_async}

    @property
    def asynchronous(self) -> bool:
        return self.async_mode

    def _on_setup(self) -> None:
        self.centre = self.params[0].clone()
        if self.async_mode:
            p = self.params[0]
            self.server = ParameterServer(self.comm, self._centre_rule, p.numel(), p.dtype, p.device)

    # ---- hooks -------------------------------------------------------------------------------
    def after_backward(self, frames=None, replicas=None) -> None:
        if not self.async_mode:
            self._require_all(replicas)
            if self.clock.due(self.global_scalar_sum, self.n_workers):
                self.sync()
                self.synced_this_step = True   # after_step reports this step's elastic step
            return
        for k in self._indices(replicas):
            if self.exchange_due[k]:
                self._exchange(k)

    def after_step(self, frames, replicas=None) -> bool:
        indices = self._indices(replicas)
        per_replica = self._frames_per_replica(frames, len(indices))
        if not self.async_mode:
            self._require_all(replicas)
            self.clock.tick(sum(per_replica))
            synced, self.synced_this_step = self.synced_this_step, False
            return synced
        for k, f in zip(indices, per_replica):
            self.exchange_due[k] = self.worker_clocks[k].tick(f)
        return False

    def sync(self) -> None:
        """Synchronous: one elastic step of every worker and of the centre. Asynchronous: every
        local worker exchanges with the centre now."""
        if self.async_mode:
            for k in range(self.n_local):
                self._exchange(k)
            return
        workers_mean = self.global_mean(self.params)
        for p in self.params:
            p.sub_(elastic_difference(p, self.centre, self.alpha))
        centre_update_(self.centre, workers_mean, self.beta)
        self.clock.reset(self.global_scalar_sum, self.n_workers)

    def reference_params(self) -> torch.Tensor:
        return self.centre.clone()

    def finalize(self) -> None:
        # One last elastic step with what the workers learned since their last one: the centre
        # is the model (a run shorter than one period would otherwise leave it untrained).
        if not self.async_mode and self.clock.steps:
            self.sync()
        if self.server is None:
            self.set_all_(self.centre)
        else:
            finish_with_server(self, self.server, self.centre, self._exchange)

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # Synchronous: finalize()'s elastic step restarts the period clock (no steps or frames left)
        # but keeps its agreed steps per period, which times the next iteration's first elastic step.
        # Asynchronous: the exchanges of `finalize()` do not restart the worker clocks, so the frames
        # since each worker's last clocked exchange, and an exchange already due (a period that ended
        # on the iteration's last step), move into the next iteration. Nothing of `after_step`'s report
        # crosses the boundary: only an elastic step inside a step counts, not finalize()'s.
        return {"steps_per_period": self.clock.steps_per_period,
                "worker_frames": [clock.frames for clock in self.worker_clocks],
                "exchange_due": list(self.exchange_due)}

    def _load_carry(self, state: dict[str, Any]) -> None:
        if len(state["worker_frames"]) != self.n_local:
            raise ValueError(f"checkpoint has {len(state['worker_frames'])} local workers, not {self.n_local}")
        self.clock.steps_per_period = state["steps_per_period"]
        for worker_clock, frames in zip(self.worker_clocks, state["worker_frames"]):
            worker_clock.frames = float(frames)
        self.exchange_due = [bool(due) for due in state["exchange_due"]]

    # ---- asynchronous exchange ---------------------------------------------------------------
    def _centre_rule(self, worker: int, x: torch.Tensor) -> torch.Tensor:
        before = self.centre.clone()
        self.centre.add_(elastic_difference(x, before, self.alpha))
        return before

    def _exchange(self, k: int) -> None:
        assert self.server is not None
        x = self.params[k]
        centre_before = self.server.request(self.first_worker + k, x)
        x.sub_(elastic_difference(x, centre_before, self.alpha))
        self.exchange_due[k] = False
        self.log.record(CommEvent("server", 2 * self.model_bytes, 2, True, (k,)))
