"""Kaldi's nnet3-train update (docs/kaldi-formats.md 6.5): `UpdateNnetWithMaxChange` with momentum.

The objective is the *summed* (not averaged) weighted log-likelihood of the minibatch and the
update is gradient ascent on it.  Call `loss = -objective; loss.backward(); opt.step(n_seqs)`:

* per updatable component c: delta_c += lr * lr_factor_c * grad(objective)_c
  (+ L2: delta_c -= 2 * num_sequences * l2_regularize_factor * lr_c * l2_c * params_c);
* scale = 1 - momentum; factor_c = min(1, max_change_c / (|delta_c| * scale));
  total = sqrt(sum factor_c^2 |delta_c|^2) * scale; if total > max_param_change: scale *= X/total;
  a non-finite total skips the update (and clears delta);
* params_c += scale * factor_c * delta_c; then delta *= momentum.

Natural gradient: in training, the components that use Kaldi's NG-SGD (NaturalGradientAffine,
LinearComponent with use-natural-gradient, NaturalGradientPerElementScale, the LstmNonlinearity
peepholes) already produce the preconditioned, rescaled update direction of Kaldi's Update as their
gradient (`kaldi_avg/model/natural_gradient.py`, `ops.py`), so delta_c += lr * grad above is
Kaldi's natural-gradient step, before max-change, exactly as in nnet3-train. Call
`module.reset_preconditioners()` at the start of each job (a fresh nnet3-train process);
`module.set_natural_gradient(False)` gives plain SGD.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..model.graph import NnetModule


@dataclass
class StepInfo:
    applied: bool
    scale: float                    # the global scale actually used (includes 1 - momentum)
    num_max_change_applied: int     # components clipped by their own max-change
    global_max_change_applied: bool


@dataclass
class _Group:
    name: str
    params: list[torch.nn.Parameter]
    lr_factor: float
    max_change: float
    l2: float


def updatable_groups(module: NnetModule) -> list[_Group]:
    groups = []
    for name, comp in module.nnet.components.items():
        if not hasattr(comp, "learning_rate_factor"):
            continue
        op = module.op(name)
        params = [p for p in op.parameters(recurse=False) if p.requires_grad]
        if params:
            groups.append(_Group(name, params, float(comp.learning_rate_factor), float(comp.max_change),
                                 float(comp.l2_regularize)))
    return groups


class KaldiSgd:
    """`learning_rate` is the value nnet3-copy --learning-rate sets (num_jobs x effective lr)."""

    def __init__(self, module: NnetModule, learning_rate: float, momentum: float = 0.0,
                 max_param_change: float = 2.0, l2_regularize_factor: float = 1.0):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.groups = updatable_groups(module)
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.max_param_change = max_param_change
        self.l2_regularize_factor = l2_regularize_factor
        self.delta = [[torch.zeros_like(p) for p in g.params] for g in self.groups]
        self.num_skipped = 0
        self.num_max_change_applied = 0
        self.num_global_max_change_applied = 0

    def zero_grad(self) -> None:
        # In place: a distributed run's gradients are views into one flat buffer (parallel.FlatParams).
        for g in self.groups:
            for p in g.params:
                if p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self, num_sequences: int = 1) -> StepInfo:
        sq_norms = []                   # per component, 0-dim float64 tensors on the parameters' device
        for g, deltas in zip(self.groups, self.delta):
            lr_c = self.learning_rate * g.lr_factor
            sq = None
            for p, d in zip(g.params, deltas):
                if p.grad is not None:
                    d.add_(p.grad, alpha=-lr_c)          # ascent on the objective = descent on -objective
                if g.l2 > 0.0:
                    d.add_(p, alpha=-2.0 * num_sequences * self.l2_regularize_factor * lr_c * g.l2)
                flat = d.reshape(-1).double()
                sq = torch.dot(flat, flat) if sq is None else sq + torch.dot(flat, flat)
            sq_norms.append(sq)
        # The one host synchronization of a step: the max-change decisions need the norms.
        sq_norms = torch.stack(sq_norms).tolist() if sq_norms else []
        scale = 1.0 - self.momentum
        factors, clipped, total_sq = [], 0, 0.0
        for g, sq in zip(self.groups, sq_norms):
            norm = math.sqrt(sq) if math.isfinite(sq) else math.inf
            f = 1.0
            if g.max_change > 0.0 and norm * abs(scale) > g.max_change:
                f = g.max_change / (norm * abs(scale))
                clipped += 1
            factors.append(f)
            total_sq += f * f * sq
        total = math.sqrt(total_sq) * abs(scale) if math.isfinite(total_sq) else math.inf
        if not math.isfinite(total):
            for deltas in self.delta:
                for d in deltas:
                    d.zero_()
            self.num_skipped += 1
            self.zero_grad()
            return StepInfo(False, 0.0, clipped, False)
        global_applied = False
        if self.max_param_change > 0.0 and total > self.max_param_change:
            scale *= self.max_param_change / total
            global_applied = True
        for g, deltas, f in zip(self.groups, self.delta, factors):
            for p, d in zip(g.params, deltas):
                p.add_(d, alpha=scale * f)
                d.mul_(self.momentum)
        self.num_max_change_applied += clipped
        self.num_global_max_change_applied += int(global_applied)
        self.zero_grad()
        return StepInfo(True, scale, clipped, global_applied)


def scale_parameters(module: NnetModule, scale: float) -> None:
    """`nnet3-copy --scale`: multiplies every updatable component's parameters (shrinkage)."""
    if scale == 1.0:
        return
    with torch.no_grad():
        for g in updatable_groups(module):
            for p in g.params:
                p.mul_(scale)


def set_learning_rates(module: NnetModule, learning_rate: float) -> None:
    """`nnet3-copy --learning-rate`: stored in the components, so written models carry it."""
    for comp in module.nnet.components.values():
        if hasattr(comp, "learning_rate_factor"):
            comp.learning_rate = float(learning_rate * comp.learning_rate_factor)
