"""Priors from the network (docs/kaldi-formats.md 6.8, 3.3).

`compute_average_posterior`: summed softmax outputs (exp of the log-softmax output node) over
a training subset, test mode, frames weighted like the training targets;
`adjust_priors` is nnet3-am-adjust-priors: normalize to sum 1.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from ..data import DiagnosticSet, SkipReport
from .objective import forward_minibatch, on_module_device

# Kaldi merges the prior subset with nnet3-merge-egs --minibatch-size=128; "1:" also keeps the last,
# smaller minibatch, since the sum wants every eg.
PRIOR_MINIBATCH = "1:128"


@torch.no_grad()
def posterior_sum(module, batches: Iterable, report: SkipReport | None = None) -> tuple[np.ndarray, float]:
    """Σ of the posteriors over `batches`; chunks whose output is not finite are left out and
    recorded in `report` (reason non_finite_output)."""
    was_training = module.training
    module.eval()
    total, frames = None, 0.0
    try:
        for mb in batches:
            s, f = _minibatch_posterior_sum(module, mb, report)
            total = s if total is None else total + s
            frames += f
    finally:
        module.train(was_training)
    if total is None:
        raise ValueError("no frames to compute the average posterior on")
    return total.numpy(), frames


def _minibatch_posterior_sum(module, mb, report: SkipReport | None) -> tuple[torch.Tensor, float]:
    """One minibatch's Σ of the posteriors (float64, in host memory) and its frames (module in test mode)."""
    mb = on_module_device(module, mb)
    post = forward_minibatch(module, mb).double().exp()
    weights = mb.weights.double()
    finite = torch.isfinite(post).all(dim=2).all(dim=1)
    if not bool(finite.all()):
        for key, ok, w in zip(mb.keys, finite.tolist(), mb.weights):
            if not ok and report is not None:
                report.add("non_finite_output", key, int(w.gt(0).sum()))
        post, weights = post[finite], weights[finite]
    return (post * weights.unsqueeze(-1)).sum(dim=(0, 1)).cpu(), float(weights.sum())


def adjust_priors(post_sum: np.ndarray) -> np.ndarray:
    post = np.asarray(post_sum, dtype=np.float64)
    if post.sum() <= 0 or not np.all(np.isfinite(post)):
        raise ValueError("the summed posterior is not a positive finite vector")
    priors = post / post.sum()
    if np.any(priors <= 0):  # log(0) breaks decoding; Kaldi does not floor here, we must stay positive
        priors = np.maximum(priors, 1e-20)
        priors /= priors.sum()
    return priors.astype(np.float32)


def alignment_priors(counts: np.ndarray, floor: float = 5e-6) -> np.ndarray:
    """nnet3-am-train-transitions' SetPriors: normalized pdf counts, floored, renormalized."""
    c = np.asarray(counts, dtype=np.float64)
    p = c / c.sum() if c.sum() > 0 else np.full(len(c), 1.0 / len(c))
    p = np.maximum(p, floor)
    return (p / p.sum()).astype(np.float32)


def subsets_posterior_sum(module, data, subsets: Iterable[int], subset_size: int, srand: int,
                          progress: Callable[[int], Any] | None = None, comm=None) -> np.ndarray:
    """Σ of the posteriors over prior subsets `subsets` (0-based archives): `subset_size` random egs of
    each, as compute_average_posterior's nnet3-subset-egs --srand=JOB --n=prior-subset-size.
    `data`: the run's JobData. With `comm` (every rank calls this alike) each subset's minibatches go
    round robin over the ranks, whose sums are gathered and added in the order one process adds
    them: every rank returns the sum one process computes. `progress(total)`, if given, returns a
    bar (train/progress.py) advanced once per subset."""
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    post = np.zeros(data.source.num_pdfs)
    subsets = list(subsets)
    bar = progress(len(subsets)) if progress is not None else None
    was_training = module.training
    module.eval()
    try:
        for k in subsets:
            subset = DiagnosticSet(data.source, data.archives.archives[k], data.chunk_config,
                                   num_frames=subset_size * data.chunk_config.principal_width,
                                   minibatch_size=PRIOR_MINIBATCH, srand=srand + k + 1, name=f"prior{k}",
                                   report=data.report)
            # one row per planned minibatch: its sum, and 1 where it loaded (a rank's other rows stay 0)
            rows = torch.zeros(len(subset), data.source.num_pdfs + 1, dtype=torch.float64)
            with torch.no_grad():
                for i, mb in subset.load(range(rank, len(subset), size)):
                    rows[i, :-1] = _minibatch_posterior_sum(module, mb, data.report)[0]
                    rows[i, -1] = 1.0
            if size > 1:
                comm.allreduce_sum_(rows)   # exact: each row has one rank's values, zeros elsewhere
            loaded = [row[:-1] for row in rows if row[-1] > 0]
            if not loaded:
                raise ValueError("no frames to compute the average posterior on")
            total = loaded[0]
            for s in loaded[1:]:
                total = total + s
            post += total.numpy()
            if bar is not None:
                bar.update()
    finally:
        module.train(was_training)
    if bar is not None:
        bar.close()
    return post
