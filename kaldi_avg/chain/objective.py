"""The LF-MMI ('chain') objective as Kaldi computes it (src/chain/chain-training.{h,cc}
`ComputeChainObjfAndDeriv`, and what src/nnet3/nnet-chain-training.cc and
nnet-chain-diagnostics.cc do around it; docs/chain.md 3).

For a minibatch of B sequences of T frames with supervision weight w and network output y (rows
frame-major, Kaldi's order):

    objf      = w * num-logprob - w * den-logprob                      (summed over the sequences)
    weight    = w * B * T
    l2_term   = -0.5 * w * l2-regularize * sum(y^2)                    (reported beside objf)
    deriv     = w * (num-post - den-post) - w * l2-regularize * y
                + out-of-range penalty:  -s * (y - clamp(y, -30, 30))   (derivative only, see below)

with, when xent-regularize != 0, the numerator posteriors w * num-post as the `xent_deriv`: the
`output-xent` branch's objective is sum(xent_output * xent_deriv) (its output is a log-softmax)
and its derivative xent-regularize * xent_deriv. The trainer then multiplies the rows of both
derivatives by the supervision's deriv weights (`--apply-deriv-weights`, default true); the
objectives are not weighted by them. nnet3-chain-compute-prob prints tot objf / tot weight (and
the l2 term per frame) per output ("Overall log-probability for 'output' is ...").

Kaldi's order of work, kept here: derivative zeroed; denominator forward and backward (scaled by
-w); out-of-range penalty, on a coin flip (RandInt(0, 1) == 0) with twice the scale, "for
efficiency" (`out_of_range_every_minibatch` applies it every minibatch at the plain scale, the
same in expectation); numerator forward and backward; if the objective is not finite or the
denominator's frame-0 checks failed, derivatives zeroed and objf = -10 * weight; then the l2 term
and its derivative (so those survive a failure).

The derivative is Kaldi's, not autograd's: the denominator's posteriors also where the output was
clamped, the out-of-range penalty and the deriv weights not in the objective. `ChainObjective`
returns a loss = -(objf + l2_term + xent-regularize * xent_objf) whose backward delivers exactly
those derivatives (negated: the loss is minimised), summed over frames as the project's other
objectives (kaldi_avg/train/objective.py). None of it waits on the device: the failure check is
a torch.where.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, fields

import torch

from .denominator import OUTPUT_LIMIT, DenominatorComputation, DenominatorGraph
from .numerator import NumeratorComputation, NumeratorGraph
from .supervision_io import Supervision

DEFAULT_OBJF = -10.0     # per frame, when the objective is not finite or the denominator failed


@dataclass(frozen=True)
class ChainTrainingOptions:
    """Kaldi's `ChainTrainingOptions` (chain-training.h), defaults included, and nnet3-chain-train's
    --apply-deriv-weights. Kaldi asserts 0 < leaky-hmm-coefficient < 1 (zero underflows in
    practice); 0 is accepted here, for the tests' HMM without leaks."""
    l2_regularize: float = 0.0
    out_of_range_regularize: float = 0.01
    leaky_hmm_coefficient: float = 1e-5
    xent_regularize: float = 0.0
    apply_deriv_weights: bool = True
    out_of_range_every_minibatch: bool = False

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not v >= 0.0:
                raise ValueError(f"--{f.name.replace('_', '-')}={v}: must be >= 0")
        if not self.leaky_hmm_coefficient < 1.0:
            raise ValueError(f"--leaky-hmm-coefficient={self.leaky_hmm_coefficient}: must be < 1")


@dataclass
class ChainObjf:
    """One minibatch (Kaldi's outputs of ComputeChainObjfAndDeriv, then the trainer's). Tensors
    are 0-dim (double) on the output's device; `weight` a host number (it depends on no output)."""
    objf: torch.Tensor
    l2_term: torch.Tensor
    weight: float
    num_logprob: torch.Tensor               # weighted, summed
    den_logprob: torch.Tensor               # weighted, summed
    ok: torch.Tensor                        # False: Kaldi's failure path was taken
    nnet_output_deriv: torch.Tensor | None = None   # d(objf + l2)/dy as the trainer hands it back
    xent_deriv: torch.Tensor | None = None          # w * numerator posteriors (Kaldi's xent_output_deriv)
    xent_objf: torch.Tensor | None = None           # sum(xent_output * xent_deriv)
    xent_output_deriv: torch.Tensor | None = None   # xent-regularize * deriv-weights * xent_deriv

    @property
    def objf_per_frame(self) -> float:
        return float(self.objf) / self.weight

    @property
    def l2_term_per_frame(self) -> float:
        return float(self.l2_term) / self.weight


def _penalize_out_of_range(y: torch.Tensor, limit: float, scale: float, deriv: torch.Tensor) -> None:
    """PenalizeOutOfRange: deriv -= scale * (y + limit) below -limit, scale * (y - limit) above."""
    deriv.sub_(scale * (y - y.clamp(-limit, limit)))


def compute_chain_objf(nnet_output: torch.Tensor, supervision: Supervision | NumeratorGraph,
                       den_graph: DenominatorGraph, opts: ChainTrainingOptions = ChainTrainingOptions(), *,
                       xent_output: torch.Tensor | None = None, deriv_weights: torch.Tensor | None = None,
                       compute_deriv: bool = True, rng: random.Random | None = None) -> ChainObjf:
    """ComputeChainObjfAndDeriv, then what NnetChainTrainer::ProcessOutputs does with its results
    (the xent objective, deriv weights, the xent scale). `nnet_output` is [T * B, pdfs] in Kaldi's
    row order (row t * B + b); `deriv_weights` [T * B] in that order; `xent_output` the
    `output-xent` log-softmax, same shape. `rng` draws Kaldi's out-of-range coin (default:
    Python's `random`). Runs outside autograd (see `ChainObjective`)."""
    with torch.no_grad():
        return _compute(nnet_output.detach(), supervision, den_graph, opts,
                        None if xent_output is None else xent_output.detach(), deriv_weights, compute_deriv, rng)


def _compute(y, supervision, den_graph, opts, xent_output, deriv_weights, compute_deriv, rng) -> ChainObjf:
    num_graph = supervision if isinstance(supervision, NumeratorGraph) else NumeratorGraph.from_supervision(
        supervision, device=y.device)
    B, T, w = num_graph.num_sequences, num_graph.frames_per_sequence, num_graph.weight
    if y.shape != (B * T, den_graph.num_pdfs):
        raise ValueError(f"nnet output has shape {tuple(y.shape)}; the supervision and den graph need "
                         f"({B * T}, {den_graph.num_pdfs})")
    use_xent = opts.xent_regularize != 0.0
    weight = w * B * T
    deriv = torch.zeros_like(y) if compute_deriv else None

    den = DenominatorComputation(den_graph, y, B, opts.leaky_hmm_coefficient)
    den_logprob = w * den.forward()
    ok = torch.ones((), dtype=torch.bool, device=y.device)
    if compute_deriv:
        res = den.backward(-w)
        deriv += res.deriv
        ok = res.ok
    del den

    if compute_deriv and opts.out_of_range_regularize:
        if opts.out_of_range_every_minibatch:
            _penalize_out_of_range(y, OUTPUT_LIMIT, opts.out_of_range_regularize, deriv)
        elif (rng or random).randint(0, 1) == 0:
            _penalize_out_of_range(y, OUTPUT_LIMIT, 2.0 * opts.out_of_range_regularize, deriv)

    num = NumeratorComputation(num_graph, y)
    num_logprob = num.forward()
    xent_deriv = None
    if use_xent:
        xent_deriv = num.backward()
        if compute_deriv:
            deriv += xent_deriv
    elif compute_deriv:
        deriv += num.backward()

    objf = num_logprob - den_logprob
    bad = ~torch.isfinite(objf) | ~ok
    objf = torch.where(bad, torch.full_like(objf, DEFAULT_OBJF * weight), objf)
    if compute_deriv:
        deriv = torch.where(bad, torch.zeros_like(deriv), deriv)
    if xent_deriv is not None:
        xent_deriv = torch.where(bad, torch.zeros_like(xent_deriv), xent_deriv)

    l2_term = torch.zeros((), dtype=torch.float64, device=y.device)
    if opts.l2_regularize != 0.0:
        scale = w * opts.l2_regularize
        l2_term = -0.5 * scale * (y.double() * y.double()).sum()
        if compute_deriv:
            deriv.add_(y, alpha=-scale)

    result = ChainObjf(objf, l2_term, weight, num_logprob, den_logprob, ~bad, deriv, xent_deriv)
    if use_xent and xent_output is not None:
        if xent_output.shape != y.shape:
            raise ValueError(f"xent output has shape {tuple(xent_output.shape)}, expected {tuple(y.shape)}")
        result.xent_objf = (xent_output.double() * xent_deriv.double()).sum()
    rows = None
    if opts.apply_deriv_weights and deriv_weights is not None:
        rows = deriv_weights.to(y).view(-1, 1)
        if rows.shape[0] != y.shape[0]:
            raise ValueError(f"{rows.shape[0]} deriv weights for {y.shape[0]} output rows")
        if compute_deriv:
            result.nnet_output_deriv = deriv * rows
    if use_xent:
        d = xent_deriv if rows is None else xent_deriv * rows
        result.xent_output_deriv = opts.xent_regularize * d
    return result


class _ChainLoss(torch.autograd.Function):
    """loss = -(objf + l2 + xent-regularize * xent_objf); its gradients are the precomputed
    (negated) Kaldi derivatives."""

    @staticmethod
    def forward(ctx, nnet_output, xent_output, loss, d_output, d_xent):
        ctx.save_for_backward(d_output, d_xent)
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        d_output, d_xent = ctx.saved_tensors
        g_out = None if d_output is None else (-grad).to(d_output) * d_output
        g_xent = None if d_xent is None else (-grad).to(d_xent) * d_xent
        return g_out, g_xent, None, None, None


class ChainObjective(torch.nn.Module):
    """The chain loss for a training step. `forward(nnet_output, supervision, xent_output=None,
    deriv_weights=None)` returns (loss, ChainObjf): `loss` (0-dim, the output's dtype) is
    -(objf + l2_term + xent_regularize * xent_objf), summed over the minibatch; loss.backward()
    puts Kaldi's derivatives (negated) into the outputs' gradients."""

    def __init__(self, den_graph: DenominatorGraph, opts: ChainTrainingOptions = ChainTrainingOptions(),
                 rng: random.Random | None = None):
        super().__init__()
        self.den_graph = den_graph
        self.opts = opts
        self.rng = rng

    def forward(self, nnet_output: torch.Tensor, supervision: Supervision | NumeratorGraph,
                xent_output: torch.Tensor | None = None, deriv_weights: torch.Tensor | None = None):
        if self.den_graph.device != nnet_output.device:
            self.den_graph = self.den_graph.to(nnet_output.device)
        needs_grad = torch.is_grad_enabled() and nnet_output.requires_grad
        use_xent = self.opts.xent_regularize != 0.0
        if use_xent and xent_output is None:
            raise ValueError("--xent-regularize is set: pass the 'output-xent' output")
        result = compute_chain_objf(nnet_output, supervision, self.den_graph, self.opts,
                                    xent_output=xent_output if use_xent else None, deriv_weights=deriv_weights,
                                    compute_deriv=needs_grad, rng=self.rng)
        total = result.objf + result.l2_term
        if result.xent_objf is not None:
            total = total + self.opts.xent_regularize * result.xent_objf
        loss = (-total).to(nnet_output.dtype)
        d_out = result.nnet_output_deriv if needs_grad else None
        d_xent = result.xent_output_deriv if (use_xent and xent_output.requires_grad) else None
        if d_out is None and d_xent is None:
            return loss, result
        return _ChainLoss.apply(nnet_output, xent_output if use_xent else None, loss, d_out, d_xent), result


@dataclass
class ChainObjectiveInfo:
    """nnet3-chain-compute-prob's totals for one output (ChainObjectiveInfo: doubles)."""
    tot_weight: float = 0.0
    tot_like: float = 0.0
    tot_l2_term: float = 0.0

    def line(self, name: str) -> str:
        """NnetChainComputeProb::PrintTotalStats's line for this output."""
        like = self.tot_like / self.tot_weight
        l2 = self.tot_l2_term / self.tot_weight
        if self.tot_l2_term == 0.0:
            return f"Overall log-probability for '{name}' is {like:g} per frame, over {self.tot_weight:g} frames."
        return (f"Overall log-probability for '{name}' is {like:g} + {l2:g} = {like + l2:g} per frame, "
                f"over {self.tot_weight:g} frames.")


class ChainProbStats:
    """Accumulates minibatches as nnet3-chain-compute-prob does: 'output' (objf, l2 term, weight)
    and, with xent, 'output-xent' (xent objf over the same weight)."""

    def __init__(self, name: str = "output"):
        self.name = name
        self.output = ChainObjectiveInfo()
        self.xent: ChainObjectiveInfo | None = None

    def add(self, r: ChainObjf) -> None:
        self.output.tot_weight += r.weight
        self.output.tot_like += float(r.objf)
        self.output.tot_l2_term += float(r.l2_term)
        if r.xent_objf is not None:
            self.xent = self.xent or ChainObjectiveInfo()
            self.xent.tot_weight += r.weight
            self.xent.tot_like += float(r.xent_objf)

    @property
    def objective_per_frame(self) -> float:
        """What nnet3-chain-combine maximizes: the objective with its l2 term, per frame."""
        o = self.output
        return (o.tot_like + o.tot_l2_term) / o.tot_weight if o.tot_weight else float("nan")

    def lines(self) -> list[str]:
        out = [self.output.line(self.name)]
        if self.xent is not None:
            out.append(self.xent.line(self.name + "-xent"))
        return out
