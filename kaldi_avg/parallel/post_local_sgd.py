"""Post-local SGD (Lin, Stich, Patel & Jaggi, ICLR 2020): synchronous SGD first, local SGD after.

Phase 1 is `ssgd` (gradient allreduce every step, global batch N·b). Phase 2 is `ma` (local steps,
parameters averaged every period). The switch happens after `warmup-frames` frames per worker (counted
exactly: one scalar allreduce per phase-1 step), or when the driver calls `start_local_phase()` on every
rank; Lin et al. switch at the first learning-rate decay, which only the driver knows, hence no
numeric default. Defaults: period 32,000 frames per worker (Lin et al.'s H ≈ 16 local steps, at Kaldi's
LSTM minibatch of 100 chunks × 20 frames), uniform averaging, local optimizer state kept (PyTorch's
PostLocalSGDOptimizer averages parameters only). Keep the SSGD learning-rate schedule in phase 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .base import Algorithm
from .comm import Communicator
from .ma import MAOptions, ModelAveraging
from .options import AlgorithmOptions, option, same_as
from .ssgd import SSGD, SSGDOptions


@dataclass(frozen=True, kw_only=True)
class PostLocalSGDOptions(AlgorithmOptions):
    warmup_frames: float | None = option(
        None, "frames per worker of synchronous SGD before local SGD (default: the training driver switches "
        "at iteration 1, the first learning-rate decay)")
    bucket_mb: float = same_as(SSGDOptions, "bucket_mb")                        # phase 1
    grad_reduce: str = same_as(SSGDOptions, "grad_reduce")                      # phase 1
    ma_weighting: str = same_as(MAOptions, "ma_weighting")                      # phase 2
    local_optimizer_state: str = same_as(MAOptions, "local_optimizer_state")    # phase 2

    def __post_init__(self) -> None:
        super().__post_init__()
        self.phase1()

    def phase1(self) -> SSGDOptions:
        """The options of phase 1, synchronous SGD."""
        return SSGDOptions(seed=self.seed, bucket_mb=self.bucket_mb, grad_reduce=self.grad_reduce)

    def phase2(self, period_frames: int | None) -> MAOptions:
        """The options of phase 2, model averaging every `period_frames` (this algorithm's period)."""
        return MAOptions(period_frames=period_frames, seed=self.seed, ma_weighting=self.ma_weighting,
                         local_optimizer_state=self.local_optimizer_state)


class PostLocalSGD(Algorithm):
    name = "post-local-sgd"
    DEFAULT_PERIOD_FRAMES = 32_000
    Options = PostLocalSGDOptions
    options: PostLocalSGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: PostLocalSGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.warmup_frames = o.warmup_frames
        self.ssgd = SSGD(comm, n_local, o.phase1())
        self.ma = ModelAveraging(comm, n_local, o.phase2(self.period_frames))
        self.ssgd.log = self.ma.log = self.log
        self.local_phase = False
        self.global_frames = 0.0
        self.hyperparameters = {"warmup_frames": o.warmup_frames, **self.ssgd.hyperparameters,
                                **self.ma.hyperparameters}

    def _on_setup(self) -> None:
        if self.local_phase:   # set up again after finalize(): no gradient hooks in phase 2
            self.ssgd.replicas = self.replicas
        else:
            self.ssgd.setup(self.replicas)
        self.ma.replicas = self.replicas   # already equal: bind without another broadcast

    def begin_iteration(self, iteration: int, seed: int) -> None:
        """Without --averaging.warmup-frames, Lin et al.'s switch at the first learning-rate decay:
        the driver's iteration 1."""
        super().begin_iteration(iteration, seed)
        if self.warmup_frames is None and iteration >= 1:
            self.local_phase = True

    def start_local_phase(self) -> None:
        """Switch to local SGD now (call on every rank at the same step)."""
        self.local_phase = True
        self.ssgd.detach()

    def after_backward(self, frames=None, replicas=None) -> None:
        if not self.local_phase:
            self.ssgd.after_backward(frames, replicas)

    def after_step(self, frames, replicas=None) -> bool:
        if self.local_phase:
            return self.ma.after_step(frames, replicas)
        self.ssgd.after_step(frames, replicas)
        if self.warmup_frames is not None:
            local = sum(self._frames_per_replica(frames, self.n_local))
            self.global_frames += self.global_scalar_sum(local)
            if self.global_frames / self.n_workers >= self.warmup_frames:
                self.start_local_phase()
        return False

    def sync(self) -> None:
        (self.ma if self.local_phase else self.ssgd).sync()

    def finalize(self) -> None:
        self.ssgd.finalize()
        if self.local_phase:
            self.ma.finalize()

    def _carry(self) -> dict[str, Any]:
        # the phase-2 averaging's own carry too: its agreed steps per period outlive finalize()
        return {"local_phase": self.local_phase, "global_frames": self.global_frames, "ma": self.ma._carry()}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.global_frames = state["global_frames"]
        self.local_phase = state["local_phase"]
        self.ma._load_carry(state["ma"])
