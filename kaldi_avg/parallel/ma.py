"""Periodic model averaging (MA, local SGD, Li et al.'s "BSP"), plus Kaldi's per-iteration rules.

Every worker runs its local optimizer; once `period_frames` frames per worker have passed, the
parameters are replaced by their average: uniform (PyTorch's PeriodicModelAverager, Kaldi's
nnet3-average) or frame-weighted wᵢ = nᵢ/Σⱼnⱼ (Li et al.'s BspWorker). Defaults: period 25,600
frames per worker (Li et al.'s `sync_period`: 100 minibatches of 256 frames), uniform weights, local
optimizer state kept (PyTorch); CNTK resets it, fairseq can average it: `local-optimizer-state`.

Kaldi's variant (Povey et al. 2015; `for_kaldi_jobs`, for options without a period) is driven per
iteration by the training driver, with the period set to manual: iteration 0 keeps the best job's
model (`select_best_`), later iterations average the jobs whose objective is within `threshold` of
the best (`average_accepted_`). Workers idle in an iteration (the num-jobs ramp) pass None as their
objective and receive the result. The learning rate nj·η_eff, shrinkage and the schedule are the
driver's (kaldi_avg.train.schedule).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .averaging import accepted_mask, best_index
from .base import OPTIMIZER_STATE_POLICIES, Algorithm, CommEvent, PeriodClock
from .comm import Communicator
from .options import DEFAULT, MANUAL, AlgorithmOptions, option

WEIGHTINGS = ("uniform", "frames")


@dataclass(frozen=True, kw_only=True)
class MAOptions(AlgorithmOptions):
    ma_weighting: str = option("uniform", "average weights: uniform (Kaldi, PyTorch) or frames (nᵢ/Σn, Li et al.)",
                               WEIGHTINGS)
    local_optimizer_state: str = option("keep", "local optimizer state after a model sync: keep (PyTorch), "
                                        "average (fairseq average_sync) or reset (CNTK)", OPTIMIZER_STATE_POLICIES)

    @property
    def kaldi_jobs(self) -> bool:
        """Kaldi's own iteration unless a period is given (`--averaging.period-frames`)."""
        return self.period_frames is DEFAULT


class ModelAveraging(Algorithm):
    name = "ma"
    DEFAULT_PERIOD_FRAMES = 25_600
    Options = MAOptions
    options: MAOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: MAOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.weighting = o.ma_weighting
        self.optimizer_state_policy = o.local_optimizer_state
        self.clock = PeriodClock(self.period_frames)
        self.frames_since_sync = [0.0] * n_local
        self.hyperparameters = {"weighting": o.ma_weighting, "local_optimizer_state": o.local_optimizer_state}

    @classmethod
    def for_kaldi_jobs(cls, comm: Communicator, n_local: int, options: AlgorithmOptions) -> ModelAveraging:
        """Kaldi's variant, for options whose `kaldi_jobs` says so: no period of its own; the training
        driver calls `select_best_` or `average_accepted_` once per iteration."""
        if not isinstance(options, MAOptions) or not options.kaldi_jobs:
            raise ValueError(f"{options} do not ask for Kaldi's per-iteration jobs")
        return cls(comm, n_local, dataclasses.replace(options, period_frames=MANUAL))

    def after_step(self, frames, replicas=None) -> bool:
        self._require_all(replicas)
        per_replica = self._frames_per_replica(frames, self.n_local)
        for k, f in enumerate(per_replica):
            self.frames_since_sync[k] += f
        self.clock.tick(sum(per_replica))
        if self.clock.due(self.global_scalar_sum, self.n_workers):
            self.sync()
            return True
        return False

    def sync(self) -> None:
        """Every replica ← the (uniform or frame-weighted) average of all workers."""
        if self.weighting == "frames":
            total = self.global_scalar_sum(sum(self.frames_since_sync))
            if total > 0:
                average = self.global_sum(self.params, self.frames_since_sync).div_(total)
            else:
                average = self.global_mean(self.params)
        else:
            average = self.global_mean(self.params)
        self.set_all_(average)
        self.apply_optimizer_state_policy(self.optimizer_state_policy)
        self._restart_period()

    def _restart_period(self) -> None:
        self.clock.reset(self.global_scalar_sum, self.n_workers)
        self.frames_since_sync = [0.0] * self.n_local

    def finalize(self) -> None:
        if self.clock.steps:
            self.sync()

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # finalize()'s average restarts the period clock, leaving no steps, frames or frames per
        # replica, but keeps its agreed steps per period, which times the next iteration's first
        # averaging (a fresh clock would agree a rate from that iteration's first step alone).
        return {"steps_per_period": self.clock.steps_per_period}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.clock.steps_per_period = state["steps_per_period"]

    # ---- Kaldi's iteration rules, collective versions of averaging.select_best/average_accepted -----
    def _all_objectives(self, objectives: Sequence[float | None]) -> list[float | None]:
        if len(objectives) != self.n_local:
            raise ValueError(f"expected {self.n_local} objectives, got {len(objectives)}")
        return [o for part in self.comm.allgather_object(list(objectives)) for o in part]

    def select_best_(self, objectives: Sequence[float | None]) -> int:
        """Kaldi's iteration 0: every replica ← the model (and statistics) of the worker with the
        best objective. Returns that worker's index."""
        best = best_index(self._all_objectives(objectives))
        for field in self._model_fields():
            self.broadcast_from_worker_(best, field)
        self._restart_period()
        return best

    def average_accepted_(self, objectives: Sequence[float | None], threshold: float = 1.0) -> list[bool]:
        """Kaldi's iterations ≥ 1: every replica ← uniform average of the workers whose objective is
        within `threshold` of the best (`get_successful_models`), statistics included as nnet3-average
        averages them. Returns the acceptance mask."""
        mask = accepted_mask(self._all_objectives(objectives), threshold)
        mine = mask[self.first_worker:self.first_worker + self.n_local]
        for field in self._model_fields():
            buffers = [getattr(replica, field) for replica in self.replicas]
            # Rejected models are left out of the sum, not weighted by 0: 0·NaN would poison it.
            total = torch.zeros_like(buffers[0])
            for p, ok in zip(buffers, mine):
                if ok:
                    total += p
            self.comm.allreduce_sum_(total)
            self.log.record(CommEvent("allreduce", total.numel() * total.element_size(), self.n_workers, True))
            total.div_(sum(mask))
            for p in buffers:
                p.copy_(total)
        self.apply_optimizer_state_policy(self.optimizer_state_policy)
        self._restart_period()
        return mask

    def _model_fields(self) -> tuple[str, ...]:
        """The replica buffers a Kaldi model average covers: parameters, and statistics if kept."""
        return ("params", "stats") if self.replicas[0].stats is not None else ("params",)
