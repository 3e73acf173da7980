"""Kaldi's semi-orthogonal constraint (`ConstrainOrthonormal`, src/nnet3/nnet-utils.cc; Povey
et al., "Semi-orthogonal low-rank matrix factorization for deep neural networks", Interspeech
2018, sections 2.2-2.3), applied to the parameters of a PyTorch `NnetModule`.

For each LinearComponent, AffineComponent (and NaturalGradientAffineComponent) and
TdnnComponent whose <OrthonormalConstraint> c is nonzero, and with probability 1/4 each call
(Kaldi: `RandInt(0, 3) == 0`, "every 4 or so minibatches"), the linear-params M (transposed
first when it has more rows than columns) takes one step towards M M^T = alpha^2 I:

    P = M M^T;  alpha = c if c > 0, else alpha^2 = tr(P P) / tr(P) ("floating": the step
    is then orthogonal to M); nothing is done if tr(P) < 1e-15.
    nu = 1/8; when floating, with ratio = tr(P P) * rows / tr(P)^2: nu /= 2 if ratio > 1.02,
    and again if ratio > 1.1.
    M <- M - 4 (nu / alpha^2) (P - alpha^2 I) M

nnet3-train calls it after every parameter update (NnetTrainer::TrainInternal, after
UpdateNnetWithMaxChange and ScaleBatchnormStats); with backstitch, after the first step only.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from torch import nn

from .ops import ComponentOp

CONSTRAINED_TYPES = ("LinearComponent", "AffineComponent", "NaturalGradientAffineComponent",
                     "TdnnComponent")


def constrained_ops(module: nn.Module) -> list[ComponentOp]:
    """The component ops that carry a nonzero orthonormal constraint."""
    return [op for op in module.modules() if isinstance(op, ComponentOp)
            and op.type_name in CONSTRAINED_TYPES
            and getattr(op.component, "orthonormal_constraint", 0.0) != 0.0]


def constrain_matrix(M: torch.Tensor, constraint: float) -> torch.Tensor:
    """One step of `ConstrainOrthonormalInternal` on M (rows <= cols), computed in float64 and
    returned in M's dtype."""
    m = M.detach().double()
    P = m @ m.t()
    nu = 0.125
    if constraint < 0.0:
        trace_p = torch.trace(P)
        if float(trace_p) < 1e-15:
            return M.detach().clone()   # an unused component: nothing to constrain
        trace_pp = (P * P).sum()
        scale_sq = trace_pp / trace_p
        ratio = float(trace_pp * P.shape[0] / (trace_p * trace_p))
        if ratio > 1.02:
            nu *= 0.5
            if ratio > 1.1:
                nu *= 0.5
    else:
        scale_sq = torch.tensor(constraint * constraint, dtype=torch.float64)
    Q = P - scale_sq * torch.eye(P.shape[0], dtype=torch.float64, device=P.device)
    return (m - 4.0 * (nu / scale_sq) * (Q @ m)).to(M.dtype)


@torch.no_grad()
def constrain_orthonormal(ops: Sequence[ComponentOp], rng: random.Random | None = None,
                          probability: float = 0.25) -> int:
    """Applies the constraint to each of `ops` (`constrained_ops(module)`, found once) with
    `probability` (Kaldi: 1/4, drawn per component; `probability=1` applies it to all). Returns how
    many were updated. Call after each optimizer step, as nnet3-train does."""
    draw = (rng or random).random
    done = 0
    for op in ops:
        if probability < 1.0 and draw() >= probability:
            continue
        W = op.linear_params
        c = op.component.orthonormal_constraint
        if W.shape[0] <= W.shape[1]:
            W.copy_(constrain_matrix(W, c))
        else:
            W.copy_(constrain_matrix(W.t(), c).t())
        done += 1
    return done
