"""Final combination in nnet3-combine's simple form (docs/kaldi-formats.md 6.6).

The models are given newest first.  The newest model's objective per frame on the combine set
is the baseline; then running averages of the newest n models, n = 2..K, are scored every
ceil(K / max_objective_evaluations) additions and at K; the best scoring one (possibly just the
newest model) is the result. Objectives are nnet3-combine's: dropout in test mode, BatchNorm on
each minibatch's own statistics (--batchnorm-test-mode=false). A network with BatchNorm then
has its statistics recomputed on the combine set (RecomputeStats), as nnet3-combine does.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..model.graph import NnetModule
from ..model.ops import training_statistics
from ..parallel import Communicator, FlatParams
from .objective import CROSS_ENTROPY, Objective, forward_outputs, on_module_device


@dataclass
class CombineResult:
    num_models: int                      # how many of the newest models the result averages
    objf: float                          # its objective per frame
    evaluations: list[tuple[int, float]] = field(default_factory=list)


def combine(modules: Sequence[NnetModule], batches, max_objective_evaluations: int = 30,
            log: Callable[[str], None] | None = None, objective: Objective = CROSS_ENTROPY,
            progress: Callable[[int], Any] | None = None,
            comm: Communicator | None = None) -> tuple[NnetModule, CombineResult]:
    """Returns `modules[0]` loaded with the best running average and the search record.
    `progress(total)`, if given, is called once with the number of objective evaluations to come
    (this rank's) and returns a bar (train/progress.py) advanced once per evaluation and closed
    after the last. With `comm`, every rank calls this with the same models and batches: the
    evaluations are shared round robin, their objectives gathered, and every rank returns the
    same result, the one a single process finds."""
    if not modules:
        raise ValueError("nothing to combine")
    if not hasattr(batches, "__len__"):   # one pass only; a DiagnosticSet is read again (its minibatches' caches)
        batches = list(batches)
    target = modules[0]
    if len(modules) == 1:   # nnet3-combine would score the one model and keep it: the score decides nothing
        if log:
            log("Combining 1 model: the newest model is the result (not evaluated)")
        if target.batchnorm_ops():
            recompute_stats(target, batches, objective.outputs)
        return target, CombineResult(1, math.nan)
    flats = [FlatParams(m.parameters(), training_statistics(m)) for m in modules]
    vectors = [_model_vector(f) for f in flats]   # float64: averages of up to K models are exact
    K = len(vectors)
    every = max(1, math.ceil(K / max_objective_evaluations))
    # what is scored: the newest model alone, then the averages of the newest n, every `every` and K
    candidates = [1] + [n for n in range(2, K + 1) if not (n - 1) % every or n == K]
    mine = set(candidates if comm is None else candidates[comm.rank::comm.size])
    bar = progress(len(mine)) if progress is not None else None
    scores: dict[int, float] = {}
    running = vectors[0].clone()
    for n in range(1, K + 1):
        if n > 1:
            running += vectors[n - 1]
        if n not in mine:
            continue
        _load_model_vector(flats[0], vectors[0] if n == 1 else running / n)
        scores[n] = objective.compute_prob(target, batches, batchnorm_test_mode=False).objective_per_frame
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    if comm is not None and comm.size > 1:
        scores = {n: objf for part in comm.allgather_object(scores) for n, objf in part.items()}
    best_n, best_objf = 1, scores[1]
    if log:
        log(f"Combining {K} models; objective of the newest model is {best_objf:g}")
    for n in candidates[1:]:
        if log:
            log(f"Average of the newest {n} models: objective {scores[n]:g}")
        if scores[n] > best_objf:
            best_n, best_objf = n, scores[n]
    _load_model_vector(flats[0], _running_average(vectors, best_n))
    if log:
        log(f"Combination chose the average of the newest {best_n} model(s), objective {best_objf:g}")
    if target.batchnorm_ops():
        recompute_stats(target, batches, objective.outputs)
        if log:
            log("Recomputed the component statistics on the combine set (the network has BatchNorm)")
    return target, CombineResult(best_n, best_objf, [(n, scores[n]) for n in candidates])


def _running_average(vectors: Sequence[torch.Tensor], n: int) -> torch.Tensor:
    """The average of the newest n, summed in the order (and so with the roundings) of the search."""
    if n == 1:
        return vectors[0]
    running = vectors[0].clone()
    for v in vectors[1:n]:
        running += v
    return running / n


@torch.no_grad()
def recompute_stats(module: NnetModule, batches, outputs: tuple[str, ...] | None = None) -> None:
    """Kaldi's RecomputeStats: every component's statistics zeroed, then accumulated afresh by a
    training-mode forward pass over `batches` (BatchNorm, sigmoid and tanh statistics; no update)."""
    was_training = module.training
    module.zero_stats()
    module.train()
    try:
        for mb in batches:
            forward_outputs(module, on_module_device(module, mb), outputs=outputs)
    finally:
        module.train(was_training)


def _model_vector(flat: FlatParams) -> torch.Tensor:
    """Parameters and statistics of one model as one float64 vector (what nnet3-combine averages)."""
    parts = [flat.params.double()] + ([flat.stats.double()] if flat.stats is not None else [])
    return torch.cat(parts)


def _load_model_vector(flat: FlatParams, vector: torch.Tensor) -> None:
    n = flat.params.numel()
    with torch.no_grad():
        flat.params.copy_(vector[:n])
        if flat.stats is not None:
            flat.stats.copy_(vector[n:])
