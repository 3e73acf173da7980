"""The arithmetic of every algorithm as pure functions on tensors, testable without any communication.

Collective versions live in the algorithm modules; they reduce the local replicas with `local_sum`
(in replica order), allreduce, and then apply exactly these formulas, so simulated and real runs
produce the same numbers.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def local_sum(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Σ wᵢ·tᵢ added in order (a fresh tensor)."""
    if weights is None:
        out = tensors[0].clone()
        for t in tensors[1:]:
            out += t
        return out
    # Each product is rounded on its own before the sum (no fused multiply-add), exactly as when
    # every rank weights its own replica and an allreduce adds the results.
    out = tensors[0] * weights[0]
    for t, w in zip(tensors[1:], weights[1:]):
        out += t * w
    return out


def mean(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(1/N) Σ tᵢ: sum first, divide once (the order every collective uses)."""
    return local_sum(tensors).div_(len(tensors))


def frame_weighted_mean(tensors: Sequence[torch.Tensor], frames: Sequence[float]) -> torch.Tensor:
    """Σ nᵢ·tᵢ / Σ nᵢ (Li et al.'s sample-weighted average); uniform if no frames were seen."""
    total = float(sum(frames))
    if total <= 0:
        return mean(tensors)
    return local_sum(tensors, [float(n) for n in frames]).div_(total)


def best_index(objectives: Sequence[float | None]) -> int:
    """Index of the best (largest) objective, first one on ties, as Kaldi's `objf.index(max(objf))`.
    None (a worker idle this iteration) and NaN (a diverged job) never win."""
    candidates = [(o, -i) for i, o in enumerate(objectives) if o is not None and not math.isnan(o)]
    if not candidates:
        raise ValueError("no worker reported an objective")
    return -max(candidates)[1]


def accepted_mask(objectives: Sequence[float | None], threshold: float = 1.0) -> list[bool]:
    """Kaldi's `get_successful_models`: accept worker i iff best − objᵢ ≤ threshold. Jobs that saw no
    frames report −inf; Kaldi cannot parse their objective and gives them all one low value, so
    when no job has a finite objective all of them are accepted."""
    best = objectives[best_index(objectives)]
    return [o is not None and (best - o <= threshold or o == best) for o in objectives]


def select_best(flats: Sequence[torch.Tensor], objectives: Sequence[float | None]) -> torch.Tensor:
    """Kaldi's iteration 0: a copy of the model of the job with the best objective."""
    return flats[best_index(objectives)].clone()


def average_accepted(flats: Sequence[torch.Tensor], objectives: Sequence[float | None],
                     threshold: float = 1.0) -> torch.Tensor:
    """Kaldi's iterations ≥ 1: uniform average (`nnet3-average`) of the accepted jobs' models."""
    accepted = [f for f, ok in zip(flats, accepted_mask(objectives, threshold)) if ok]
    return mean(accepted)


def default_block_momentum(n_workers: int) -> float:
    """CNTK's recommendation quoted by Li et al.: η_b = 1 − 1/N (0 for a single worker)."""
    return 1.0 - 1.0 / n_workers


def block_momentum_from_time_constant(period_frames: float, time_constant_frames: float) -> float:
    """CNTK's `TimeConstant2Momentum`: η_b = exp(−period/time_constant); keeps the filter's memory
    fixed when the sync period changes."""
    return math.exp(-period_frames / time_constant_frames)


def bmuf_block_update_(start: torch.Tensor, momentum: torch.Tensor, model: torch.Tensor,
                       average: torch.Tensor, block_momentum: float, block_lr: float,
                       nesterov: bool, nbm_form: str = "paper") -> None:
    """One BMUF block update, in place (Chen & Huo 2016).

    start = θ_g(t−1), the point every worker started the block from; momentum = Δ(t−1);
    model = θ(t−1), the global model; average = θ̄(t).
        G = θ̄ − θ_g ;  Δ = η_b·Δ + ζ·G ;  θ = θ + Δ
        CBM: θ_g = θ;   NBM (paper): θ_g = θ + η_b·Δ;
        NBM ("cntk", the single-vector form of CNTK and fairseq): θ_g = θ_g + (1 + η_b)·Δ, θ = θ_g.
    """
    block_step = average - start
    momentum.mul_(block_momentum).add_(block_step, alpha=block_lr)
    if nesterov and nbm_form == "cntk":
        start.add_(momentum, alpha=1.0 + block_momentum)
        model.copy_(start)
        return
    if nesterov and nbm_form != "paper":
        raise ValueError(f"unknown NBM form {nbm_form!r} (paper or cntk)")
    model.add_(momentum)
    start.copy_(model)
    if nesterov:
        start.add_(momentum, alpha=block_momentum)


def elastic_difference(x: torch.Tensor, centre: torch.Tensor, alpha: float) -> torch.Tensor:
    """EASGD's elastic step e = α·(x − x̃): the worker moves by −e, the centre by +e."""
    return (x - centre).mul_(alpha)


def centre_update_(centre: torch.Tensor, workers_mean: torch.Tensor, beta: float) -> None:
    """Synchronous EASGD centre: x̃ ← x̃ + α·Σᵢ(xⁱ − x̃) = (1 − β)·x̃ + β·mean(xⁱ), with β = N·α."""
    centre.mul_(1.0 - beta).add_(workers_mean, alpha=beta)


def pairwise_delta(sent: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
    """What a gossip pair adds to the side that sent `sent`: (received − sent)/2.

    The partner adds exactly the negation, so xⁱ + xʲ is unchanged; applied right away it is plain
    averaging, applied to a model that moved meanwhile it still preserves the sum."""
    return (received - sent).mul_(0.5)


def staleness_scale(staleness: int) -> float:
    """Zhang et al.'s staleness-aware step: divide by the staleness (at least 1)."""
    return 1.0 / max(1, staleness)
