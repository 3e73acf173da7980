"""The training objective: Kaldi's linear objective on log-softmax outputs (docs/kaldi-formats.md 6.5).

`compute_loss` is what a training step minimizes; `compute_prob` is nnet3-compute-prob's objective
and accuracy in test mode, for the diagnostics and the final combination.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


def compute_loss(module, mb, min_deriv_time: int | None, max_deriv_time_relative: int | None = None):
    """One minibatch: (-(summed weighted log-likelihood), objective, frames). The derivative limits
    are nnet3-train's --optimization.min-deriv-time and max-deriv-time-relative (after the chunk's
    last output frame)."""
    out = forward_minibatch(module, mb, min_deriv_time, max_deriv_time_relative)
    objf = minibatch_objective(out, mb.targets, mb.weights)
    return -objf, float(objf.detach()), float(mb.num_frames)


@dataclass
class ProbStats:
    objf: float = 0.0       # summed weighted log-likelihood
    correct: float = 0.0    # summed weight of frames whose argmax is the label
    frames: float = 0.0     # summed weight

    def add(self, other: ProbStats) -> None:
        self.objf += other.objf
        self.correct += other.correct
        self.frames += other.frames

    @property
    def objf_per_frame(self) -> float:
        return self.objf / self.frames if self.frames else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.frames if self.frames else float("nan")


def minibatch_objective(output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Kaldi's linear objective: sum over frames of weight * output[label] (summed, not averaged)."""
    picked = output.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (picked * weights).sum()


def forward_minibatch(module, mb, min_deriv_time=None, max_deriv_time_relative=None) -> torch.Tensor:
    num_frames = mb.targets.shape[1]
    max_deriv_time = None if max_deriv_time_relative is None else num_frames - 1 + max_deriv_time_relative
    return module(mb.features, mb.left_context, num_frames, ivectors=mb.ivectors,
                  min_deriv_time=min_deriv_time, max_deriv_time=max_deriv_time)


@torch.no_grad()
def compute_prob(module, batches: Iterable, batchnorm_test_mode: bool = True) -> ProbStats:
    """nnet3-compute-prob: objective and accuracy in test mode. `batchnorm_test_mode=False`
    (nnet3-combine's default): BatchNorm normalizes each minibatch with its own statistics."""
    was_training = module.training
    module.eval()
    if not batchnorm_test_mode:
        for op in module.batchnorm_ops():
            op.train()
    stats = ProbStats()
    try:
        for mb in batches:
            out = forward_minibatch(module, mb)
            stats.objf += float(minibatch_objective(out, mb.targets, mb.weights))
            correct = (out.argmax(-1) == mb.targets).to(mb.weights.dtype)
            stats.correct += float((correct * mb.weights).sum())
            stats.frames += float(mb.weights.sum())
    finally:
        module.train(was_training)
    return stats
