"""One worker of a distributed run: a replica of the network on one flat buffer, nnet3-train's
update, and the minibatches of its job.

`Learner` is what `kaldi_avg.parallel` steps: `backward()` computes the next minibatch's gradient into
the flat gradient buffer, `update()` applies KaldiSgd. The driver's loop and the in-process
`Simulator` (N logical workers on one rank) drive the same object, so a simulated worker is
exactly a real one. The optimizer is fresh each iteration (as each of Kaldi's nnet3-train jobs
is), which keeps checkpoints at iteration boundaries complete.
"""
from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Sequence

import torch

from ..kaldi.nnet3.nnet import Nnet
from ..model.graph import NnetModule
from ..model.ops import training_statistics
from ..model.orthonormal import constrain_orthonormal, constrained_ops
from ..parallel import FlatParams, Replica
from .diagnostics import TrainLog
from .objective import CROSS_ENTROPY, Objective
from .optim import KaldiSgd, scale_parameters, set_learning_rates

# nnet3-train's --batchnorm-stats-scale; train_rnn.py does not set it.
BATCHNORM_STATS_SCALE = 0.8


class Learner:
    """A worker's model replica (its own copy of `nnet`), optimizer and minibatch iterator."""

    def __init__(self, nnet: Nnet, device: str = "cpu", min_deriv_time: int | None = None,
                 max_deriv_time_relative: int | None = None, objective: Objective = CROSS_ENTROPY) -> None:
        self.module = NnetModule(copy.deepcopy(nnet)).to(device)
        self.flat = FlatParams(self.module.parameters(), training_statistics(self.module))
        self.constrained = constrained_ops(self.module)   # TDNN-F's semi-orthogonal factors, found once
        self.rng = random.Random(0)
        self.min_deriv_time = min_deriv_time
        self.max_deriv_time_relative = max_deriv_time_relative
        self.objective = objective
        self.optimizer: KaldiSgd | None = None
        self.batches: Iterator = iter(())
        self.log: TrainLog | None = None
        self._num_chunks = 0
        self.replica = Replica(self.flat.params, self.flat.grads, tuple(self.flat.parameters), self._optimizer_state,
                               self.flat.stats)

    def start(self, batches: Iterator, log: TrainLog, learning_rate: float, momentum: float,
              max_param_change: float, l2_regularize_factor: float, shrink: float = 1.0,
              dropout: Sequence[tuple[str, float]] = ()) -> None:
        """Begin a job (nnet3-copy --learning-rate --scale=shrink [--edits=set-dropout-proportion...] |
        nnet3-train): the learning rate stored in the components (so written models carry it, as
        Kaldi's do), shrunk parameters, the (pattern, proportion) dropout edits, zeroed component
        statistics (ZeroComponentStats), fresh NG-SGD estimates and a fresh optimizer over `batches`."""
        set_learning_rates(self.module, learning_rate)
        scale_parameters(self.module, shrink)
        for pattern, proportion in dropout:
            count = self.module.set_dropout_proportion(proportion, pattern)
            log.note(f"set-dropout-proportion name={pattern} proportion={proportion}: "
                     f"set dropout proportions for {count} components.")
        self.module.zero_stats()
        self.module.reset_preconditioners()
        self.module.train()
        self.batches = batches
        self.log = log
        self.optimizer = KaldiSgd(self.module, learning_rate, momentum, max_param_change, l2_regularize_factor)
        if self.constrained:   # nnet3-train's RandInt draws, from the job's seed (torch.manual_seed before it)
            self.rng = random.Random(int(torch.randint(2**31 - 1, ())))

    def train_pass(self) -> None:
        """Every remaining minibatch of `batches` (a whole Kaldi job)."""
        while True:
            try:
                self.backward()
            except StopIteration:
                return
            self.update()

    def set_learning_rate(self, learning_rate: float) -> None:
        """Within an iteration (schedules finer than Kaldi's per-iteration rate, e.g. experiments)."""
        self.optimizer.learning_rate = learning_rate

    def backward(self) -> int:
        mb = next(self.batches)
        loss, objf, frames = self.objective.loss(self.module, mb, self.min_deriv_time, self.max_deriv_time_relative)
        loss.backward()
        self._num_chunks = mb.num_chunks
        self.log.add(objf, frames)
        return int(frames)

    def update(self) -> None:
        """NnetTrainer::TrainInternal after the backward pass: the update, ScaleBatchnormStats,
        ConstrainOrthonormal."""
        self.optimizer.step(self._num_chunks)   # also zeroes the flat gradient buffer
        self.module.scale_batchnorm_stats(BATCHNORM_STATS_SCALE)
        if self.constrained:
            constrain_orthonormal(self.constrained, self.rng)

    def _optimizer_state(self) -> list[torch.Tensor]:
        return [] if self.optimizer is None else [d for deltas in self.optimizer.delta for d in deltas]
