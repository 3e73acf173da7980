"""The LDA-like preconditioning transform `train_rnn.py` computes for a `fixed-affine-layer`.

Kaldi (stage -3): `nnet3-acc-lda-stats` accumulates class-conditional statistics of the
output of `init.raw` (the spliced, possibly delayed input) with the frame's pdf as class, and
`nnet-get-feature-transform` turns them into a full-dimensional scaled LDA: within-class
factor 0.001, singular values capped at 5, mean offset removed (an out x (in+1) matrix whose
last column is the bias). Own implementation of `src/nnet2/get-feature-transform.cc`.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..model.graph import NnetModule
from .objective import CROSS_ENTROPY, Objective, forward_minibatch


class LdaStats:
    """Per-class first-order and total second-order statistics (double precision)."""

    def __init__(self, num_classes: int, dim: int):
        self.count = np.zeros(num_classes)
        self.first = np.zeros((num_classes, dim))
        self.second = np.zeros((dim, dim))

    def accumulate(self, feats: np.ndarray, classes: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.asarray(feats, dtype=np.float64)
        w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
        np.add.at(self.count, classes, w)
        np.add.at(self.first, classes, x * w[:, None])
        self.second += (x * w[:, None]).T @ x

    def add(self, other: LdaStats) -> None:
        self.count += other.count
        self.first += other.first
        self.second += other.second

    def total_and_between(self):
        n = self.count.sum()
        if n <= 0:
            raise ValueError("LDA statistics are empty: no frames were accumulated")
        mean = self.first.sum(0) / n
        total = self.second / n - np.outer(mean, mean)
        seen = self.count > 0
        class_means = self.first[seen] / self.count[seen, None]
        between = (class_means * (self.count[seen, None] / n)).T @ class_means - np.outer(mean, mean)
        return total, between, mean


def estimate_transform(stats: LdaStats, within_class_factor: float = 0.001, max_singular_value: float = 5.0,
                       remove_offset: bool = True) -> np.ndarray:
    """The full-dimensional transform as a (dim, dim + 1) matrix (last column: offset) when
    `remove_offset`, else (dim, dim)."""
    total, between, mean = stats.total_and_between()
    dim = total.shape[0]
    within = total - between
    try:
        chol = np.linalg.cholesky(within)
    except np.linalg.LinAlgError:
        within = within + np.eye(dim) * (1e-3 * np.trace(within) / dim)
        chol = np.linalg.cholesky(within)
    chol_inv = np.linalg.inv(chol)
    projected = chol_inv @ between @ chol_inv.T
    u, d, _ = np.linalg.svd(projected)
    order = np.argsort(-d, kind="stable")
    u, d = u[:, order], d[order]
    m = u.T @ chol_inv
    if within_class_factor != 1.0:
        m *= np.sqrt((within_class_factor + d) / (1.0 + d))[:, None]
    if max_singular_value > 0:
        uu, s, vt = np.linalg.svd(m)
        if (s > max_singular_value).any():
            m = (uu * np.minimum(s, max_singular_value)) @ vt
    if remove_offset:
        m = np.concatenate([m, -(m @ mean)[:, None]], axis=1)
    return m.astype(np.float32)


@torch.no_grad()
def lda_transform(init, minibatches: Iterable, num_pdfs: int, objective: Objective = CROSS_ENTROPY) -> np.ndarray:
    """The transform from the init network's output over `minibatches` (chunks with their
    i-vectors, as nnet3-acc-lda-stats reads egs): every output frame counted under the classes
    `objective.lda_classes` gives it (its pdf with its weight; chain: the supervision's pdf
    posteriors)."""
    module = NnetModule(init).eval()
    stats = LdaStats(num_pdfs, init.output_dim())
    for mb in minibatches:
        y = forward_minibatch(module, mb)
        rows, classes, weights = objective.lda_classes(mb)
        stats.accumulate(y.reshape(-1, y.shape[-1]).numpy()[rows], classes, weights)
    return estimate_transform(stats)
