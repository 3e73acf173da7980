"""The training objective: Kaldi's linear objective on log-softmax outputs (docs/kaldi-formats.md 6.5).

`compute_loss` is what a training step minimizes; `compute_prob` is nnet3-compute-prob's objective
and accuracy in test mode, for the diagnostics and the final combination.

`Objective` is what the driver, the learners and the combination know of an objective;
`CrossEntropy` is train_rnn.py's and train_dnn.py's, `kaldi_avg.chain.training.ChainTraining`
chain/train.py's (docs/chain.md 9).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
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

    @property
    def objective_per_frame(self) -> float:
        return self.objf_per_frame

    def lines(self) -> list[str]:
        """nnet3-compute-prob's PrintTotalStats lines (without their LOG prefix)."""
        frames = f"{self.frames:g}" if self.frames != int(self.frames) else str(int(self.frames))
        return [f"Overall log-likelihood for 'output' is {self.objf_per_frame:g} per frame, over {frames} frames.",
                f"Overall accuracy for 'output' is {self.accuracy:g} per frame, over {frames} frames."]


class Objective(ABC):
    """One training objective: a step's loss and the diagnostics' statistics and log lines."""

    train_program = "nnet3-train"            # whose logs log/train.N.J.log imitates
    prob_program = "nnet3-compute-prob"      # log/compute_prob_*.log ...
    prob_source = "nnet-diagnostics.cc"      # ... and the source file its LOG lines name
    report_key = "accuracy"                  # accuracy.report's column (Kaldi's generate_acc_logprob_report)
    outputs: tuple[str, ...] | None = None   # the output nodes it reads (None: the module's 'output')
    seconds = 0.0    # time in the objective beyond the network (chain: den/num forward-backward), this rank

    @abstractmethod
    def loss(self, module, mb, min_deriv_time: int | None, max_deriv_time_relative: int | None):
        """(loss to minimize, objective summed over the minibatch, frames it is over)."""

    @abstractmethod
    def compute_prob(self, module, batches: Iterable, batchnorm_test_mode: bool = True):
        """Statistics with `objective_per_frame` (what the combination maximizes) and `lines()`."""

    @abstractmethod
    def lda_classes(self, mb) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The classes the LDA statistics count each output frame under (nnet3-acc-lda-stats,
        nnet3-chain-acc-lda-stats): (frame as an index of the (N x W) outputs, pdf, weight)."""


class CrossEntropy(Objective):
    """nnet3-train's linear objective on the log-softmax 'output'."""

    def loss(self, module, mb, min_deriv_time, max_deriv_time_relative):
        return compute_loss(module, mb, min_deriv_time, max_deriv_time_relative)

    def compute_prob(self, module, batches, batchnorm_test_mode=True) -> ProbStats:
        return compute_prob(module, batches, batchnorm_test_mode)

    def lda_classes(self, mb):
        """Every frame with weight > 0, its pdf as class, with its weight."""
        w = mb.weights.reshape(-1).numpy()
        rows = np.flatnonzero(w > 0)
        return rows, mb.targets.reshape(-1).numpy()[rows], w[rows]


CROSS_ENTROPY = CrossEntropy()


def minibatch_objective(output: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Kaldi's linear objective: sum over frames of weight * output[label] (summed, not averaged)."""
    picked = output.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (picked * weights).sum()


def forward_minibatch(module, mb, min_deriv_time=None, max_deriv_time_relative=None) -> torch.Tensor:
    """The 'output' node at the minibatch's output frames, (N, W, dim)."""
    return forward_outputs(module, mb, min_deriv_time, max_deriv_time_relative)[0]


def forward_outputs(module, mb, min_deriv_time=None, max_deriv_time_relative=None,
                    outputs: tuple[str, ...] | None = None) -> list[torch.Tensor]:
    """The output nodes `outputs` (default: the module's) at the minibatch's output frames, times
    k f for the frame-subsampling factor f: nnet3's computation asks for those alone, and so does
    this one (`output_stride`; the layers above a splice of multiples of f run at every f-th frame).
    The derivative limit after the chunk is relative to its last output frame, as nnet3-train's.
    Without gradients, the minibatch's cache (a DiagnosticSet's) keeps what is computed from it alone."""
    f = mb.frame_subsampling_factor
    last = (mb.targets.shape[1] - 1) * f
    max_deriv_time = None if max_deriv_time_relative is None else last + max_deriv_time_relative
    return module.forward_outputs(mb.features, mb.left_context, last + 1, ivectors=mb.ivectors,
                                  min_deriv_time=min_deriv_time, max_deriv_time=max_deriv_time, outputs=outputs,
                                  cache=getattr(mb, "cache", None), output_stride=f)


@contextmanager
def evaluation_mode(module, batchnorm_test_mode: bool = True):
    """nnet3-compute-prob's (and nnet3-combine's) computation: dropout in test mode, BatchNorm on
    its stored statistics, or with `batchnorm_test_mode=False` on each minibatch's own."""
    was_training = module.training
    module.eval()
    if not batchnorm_test_mode:
        for op in module.batchnorm_ops():
            op.train()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def on_module_device(module, mb):
    """`mb` where `module`'s parameters are: the fixed sets (diagnostics, combination, priors) stay
    in host memory, as the CPU-side cache of their collated minibatches, while a rank's model may be
    on its GPU."""
    param = next(iter(module.parameters()), None) if hasattr(module, "parameters") else None
    return mb if param is None or mb.features.device == param.device else mb.to(param.device)


def compute_prob(module, batches: Iterable, batchnorm_test_mode: bool = True) -> ProbStats:
    """nnet3-compute-prob: objective and accuracy in test mode (`evaluation_mode`)."""
    stats = ProbStats()
    with evaluation_mode(module, batchnorm_test_mode):
        for mb in batches:
            mb = on_module_device(module, mb)
            out = forward_minibatch(module, mb)
            stats.objf += float(minibatch_objective(out, mb.targets, mb.weights))
            correct = (out.argmax(-1) == mb.targets).to(mb.weights.dtype)
            stats.correct += float((correct * mb.weights).sum())
            stats.frames += float(mb.weights.sum())
    return stats
