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

from typing import Any

from .base import DEFAULT, OPTIMIZER_STATE_POLICIES, Algorithm, Option
from .ma import WEIGHTINGS, ModelAveraging
from .options import optional_float
from .ssgd import GRAD_REDUCTIONS, SSGD


class PostLocalSGD(Algorithm):
    name = "post-local-sgd"
    DEFAULT_PERIOD_FRAMES = 32_000
    OPTIONS = (
        Option("warmup-frames", optional_float, None, "frames per worker of synchronous SGD before local SGD "
               "(default: the training driver switches at iteration 1, the first learning-rate decay)"),
        Option("bucket-mb", float, 4.0, "gradient bucket size in MB (phase 1)"),
        Option("grad-reduce", str, "mean", "phase-1 gradient reduction: mean, sum or frame-normalized",
               GRAD_REDUCTIONS),
        Option("ma-weighting", str, "uniform", "phase-2 average weights: uniform or frames", WEIGHTINGS),
        Option("local-optimizer-state", str, "keep", "local optimizer state after a phase-2 average: keep, "
               "average or reset", OPTIMIZER_STATE_POLICIES),
    )

    def __init__(self, comm, n_local: int = 1, period_frames: Any = DEFAULT, seed: int = 0,
                 warmup_frames: float | None = None, bucket_mb: float = 4.0, grad_reduce: str = "mean",
                 ma_weighting: str = "uniform", local_optimizer_state: str = "keep") -> None:
        super().__init__(comm, n_local, period_frames, seed)
        self.warmup_frames = warmup_frames
        self.ssgd = SSGD(comm, n_local, seed=seed, bucket_mb=bucket_mb, grad_reduce=grad_reduce)
        self.ma = ModelAveraging(comm, n_local, self.period_frames, seed, ma_weighting, local_optimizer_state)
        self.ssgd.log = self.ma.log = self.log
        self.local_phase = False
        self.global_frames = 0.0
        self.hyperparameters = {"warmup_frames": warmup_frames, **self.ssgd.hyperparameters,
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
        return {"local_phase": self.local_phase, "global_frames": self.global_frames}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.global_frames = state["global_frames"]
        self.local_phase = state["local_phase"]

    def _state(self) -> dict[str, Any]:
        return {"local_phase": self.local_phase, "global_frames": self.global_frames,
                "ssgd": self.ssgd.state_dict(), "ma": self.ma.state_dict()}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.global_frames = state["global_frames"]
        self.ssgd.load_state_dict(state["ssgd"])
        self.ma.load_state_dict(state["ma"])
        if state["local_phase"]:
            self.start_local_phase()
