"""The chain objective as the trainer uses it: nnet3-chain-train's loss and
nnet3-chain-compute-prob's statistics (docs/chain.md 3, 9.4), behind the driver's `Objective`.

The network's outputs at the minibatch's output frames (every f-th frame) become Kaldi's
[frames x chunks, pdfs] matrix, rows in (frame, chunk) order, as does the minibatch's deriv
weights; `output-xent` is computed in the same pass when --chain.xent-regularize is set.
"""
from __future__ import annotations

import random
import time

import numpy as np
import torch

from ..train.objective import Objective, evaluation_mode, forward_outputs, on_module_device
from .denominator import DenominatorGraph
from .numerator import NumeratorComputation, NumeratorGraph
from .objective import ChainObjective, ChainProbStats, ChainTrainingOptions, compute_chain_objf

XENT_OUTPUT = "output-xent"


def kaldi_rows(y: torch.Tensor) -> torch.Tensor:
    """(chunks, frames, dim) -> Kaldi's (frames x chunks, dim), row t * chunks + n."""
    return y.transpose(0, 1).reshape(-1, y.shape[-1])


class ChainTraining(Objective):
    """LF-MMI with the den graph of den.fst and the --chain.* options."""

    train_program = "nnet3-chain-train"
    prob_program = "nnet3-chain-compute-prob"
    prob_source = "nnet-chain-diagnostics.cc"
    report_key = "log-probability"

    def __init__(self, den_graph: DenominatorGraph, opts: ChainTrainingOptions, rng: random.Random | None = None):
        self.den_graph = den_graph
        self.opts = opts
        self.outputs = ("output", XENT_OUTPUT) if opts.xent_regularize else ("output",)
        self.objective = ChainObjective(den_graph, opts, rng)

    def _rows(self, module, mb, min_deriv_time=None, max_deriv_time_relative=None):
        ys = [kaldi_rows(y) for y in forward_outputs(module, mb, min_deriv_time, max_deriv_time_relative,
                                                     self.outputs)]
        return ys[0], (ys[1] if len(ys) > 1 else None), kaldi_rows(mb.weights.unsqueeze(-1)).view(-1)

    def loss(self, module, mb, min_deriv_time, max_deriv_time_relative):
        """(loss, objf + l2 term summed, the supervision's weight x frames)."""
        y, xent, deriv_weights = self._rows(module, mb, min_deriv_time, max_deriv_time_relative)
        t0 = time.perf_counter()
        loss, r = self.objective(y, mb.supervision, xent, deriv_weights)
        objf = float(r.objf + r.l2_term)   # waits for the device, so the time below is the objective's
        self.seconds += time.perf_counter() - t0
        return loss, objf, r.weight

    def lda_classes(self, mb):
        """nnet3-chain-acc-lda-stats: each output frame under the pdfs of the supervision's own
        posteriors (its forward-backward with the network output left out: zero), weighted by them."""
        graph = NumeratorGraph.from_supervision(mb.supervision)
        n, w = mb.weights.shape
        num = NumeratorComputation(graph, torch.zeros(n * w, graph.label_dim))
        num.forward()
        post = num.backward().reshape(w, n, -1).transpose(0, 1).reshape(n * w, -1).numpy()
        rows, pdfs = np.nonzero(post > 0)
        return rows, pdfs, post[rows, pdfs]

    def compute_prob(self, module, batches, batchnorm_test_mode: bool = True) -> ChainProbStats:
        stats = ChainProbStats()
        with evaluation_mode(module, batchnorm_test_mode):
            for mb in batches:
                y, xent, deriv_weights = self._rows(module, on_module_device(module, mb))
                if self.den_graph.device != y.device:
                    self.den_graph = self.den_graph.to(y.device)
                stats.add(compute_chain_objf(y, mb.supervision, self.den_graph, self.opts, xent_output=xent,
                                             deriv_weights=deriv_weights, compute_deriv=False))
        return stats


__all__ = ["ChainTraining", "XENT_OUTPUT", "kaldi_rows"]
