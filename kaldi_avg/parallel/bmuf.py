"""BMUF: blockwise model-update filtering (Chen & Huo, ICASSP 2016).

Workers run local SGD from a common start θ_g for one block (the period); then, with θ̄ the workers'
average (one allreduce), every rank applies the same filter to its replicated state:
    G = θ̄ − θ_g ;  Δ = η_b·Δ + ζ·G ;  θ = θ + Δ ;  θ_g = θ (classical) or θ + η_b·Δ (Nesterov)
and all workers restart from θ_g. The steady-state gain under a constant G is ζ/(1 − η_b).

Defaults: block momentum η_b = 1 − 1/N and block learning rate ζ = 1 (CNTK's recommendation quoted
by Li et al.; gain exactly N, the compensation Kaldi gets from lr = N·η_eff), classical block
momentum (the variant Li et al. evaluated), period 25,600 frames per worker (Li et al.'s
sync_period). `bmuf-time-constant-frames` sets η_b = exp(−period/T) instead, so η_b follows period
changes (CNTK). The paper's Nesterov form is the default NBM; `bmuf-nbm-form cntk` is CNTK's and
fairseq's single-vector form, whose steady step is about (1 + η_b) times larger. Warm-up policy: start
from a warm model (Li et al.); no in-algorithm warm-up. The local learning rate stays the
single-worker one. The reference model after `finalize()` is θ (without the Nesterov look-ahead).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .averaging import block_momentum_from_time_constant, bmuf_block_update_, default_block_momentum
from .base import Algorithm, PeriodClock
from .comm import Communicator
from .ma import MAOptions
from .options import AlgorithmOptions, option, same_as

NBM_FORMS = ("paper", "cntk")


@dataclass(frozen=True, kw_only=True)
class BMUFOptions(AlgorithmOptions):
    block_momentum: float | None = option(None, "block momentum η_b (default 1 − 1/N)")
    block_lr: float = option(1.0, "block learning rate ζ")
    bmuf_time_constant_frames: float | None = option(
        None, "if set, η_b = exp(−period/T) with T in frames per worker (CNTK's time-constant form)")
    bmuf_nesterov: bool = option(False, "Nesterov block momentum (NBM) instead of classical (CBM)")
    bmuf_nbm_form: str = option("paper", "NBM form: paper (reparametrized Nesterov) or cntk (single vector, as "
                                "CNTK and fairseq)", NBM_FORMS)
    local_optimizer_state: str = same_as(MAOptions, "local_optimizer_state")   # CNTK's default: reset

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.block_momentum is not None and self.bmuf_time_constant_frames is not None:
            raise ValueError("give block-momentum or bmuf-time-constant-frames, not both")


class BMUF(Algorithm):
    name = "bmuf"
    DEFAULT_PERIOD_FRAMES = 25_600
    Options = BMUFOptions
    options: BMUFOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: BMUFOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        block_momentum = o.block_momentum
        if o.bmuf_time_constant_frames is not None:
            if not self.period_frames:
                raise ValueError("the time-constant form needs a positive period")
            block_momentum = block_momentum_from_time_constant(self.period_frames, o.bmuf_time_constant_frames)
        self.block_momentum = default_block_momentum(self.n_workers) if block_momentum is None else block_momentum
        self.block_lr = o.block_lr
        self.nesterov = o.bmuf_nesterov
        self.nbm_form = o.bmuf_nbm_form
        self.optimizer_state_policy = o.local_optimizer_state
        self.clock = PeriodClock(self.period_frames)
        self.hyperparameters = {"block_momentum": self.block_momentum, "block_lr": o.block_lr,
                                "nesterov": o.bmuf_nesterov, "nbm_form": o.bmuf_nbm_form if o.bmuf_nesterov else None,
                                "local_optimizer_state": o.local_optimizer_state,
                                "steady_state_gain": o.block_lr / (1.0 - self.block_momentum)
                                if self.block_momentum < 1 else float("inf")}

    def _on_setup(self) -> None:
        self.start = self.params[0].clone()        # θ_g: where every block starts
        self.model = self.params[0].clone()        # θ: the global model
        self.momentum = torch.zeros_like(self.start)  # Δ

    def after_step(self, frames, replicas=None) -> bool:
        self._require_all(replicas)
        self.clock.tick(sum(self._frames_per_replica(frames, self.n_local)))
        if self.clock.due(self.global_scalar_sum, self.n_workers):
            self.sync()
            return True
        return False

    def sync(self) -> None:
        """Block update from the workers' average; every replica restarts from the new θ_g."""
        average = self.global_mean(self.params)
        bmuf_block_update_(self.start, self.momentum, self.model, average, self.block_momentum,
                           self.block_lr, self.nesterov, self.nbm_form)
        self.set_all_(self.start)
        self.apply_optimizer_state_policy(self.optimizer_state_policy)
        self.clock.reset(self.global_scalar_sum, self.n_workers)

    def reference_params(self) -> torch.Tensor:
        return self.model.clone()

    def finalize(self) -> None:
        if self.clock.steps:
            self.sync()
        self.set_all_(self.model)

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # finalize()'s block update restarts the period clock (no steps or frames left) but keeps its
        # agreed steps per period, which times the next iteration's first block. θ_g, θ and Δ restart
        # from the reference model at every setup(), uninterrupted or not.
        return {"steps_per_period": self.clock.steps_per_period}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.clock.steps_per_period = state["steps_per_period"]
