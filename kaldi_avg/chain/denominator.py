"""The LF-MMI denominator: Kaldi's `DenominatorGraph` as tensors and its leaky-HMM forward-backward
(src/chain/chain-den-graph.{h,cc}, src/chain/chain-denominator.{h,cc}; docs/chain.md 4).

The graph
---------
`DenominatorGraph` holds the arcs of den.fst (an epsilon-free acceptor whose labels are pdf-id + 1)
in Kaldi's order (by source state, each state's arcs in FST order): `src`, `dst`, `pdf` and `prob`
(= exp(-weight), BaseFloat), and the initial probabilities `initial_probs` of
`DenominatorGraph::SetInitialProbs`: each state's out-weights (arcs + final) normalised to sum to
one, one unit of mass put on the start state, 100 steps of that HMM (renormalised to sum to one
after each), the 100 distributions averaged (in double, stored as BaseFloat). The final weights of
den.fst play no other part: every state is final with probability one.

The computation (one sequence; all sequences of a minibatch run together, in Kaldi's row order)
------------------------------------------------------------------------------------------------
x(t, n) = exp(clamp(y(t, n), -30, 30)) for the network output y (rows ordered frame-major: row
t * num_sequences + s, as nnet3 orders them), init = initial_probs, c = leaky-hmm-coefficient,
p_a, pdf(a), src(a), dst(a) the arcs:

    alpha(0, i)   = init(i)
    tot(t)        = sum_i alpha(t, i)                                 ("tot-alpha", the arbitrary scale)
    alpha'(t, i)  = alpha(t, i) + c * tot(t) * init(i)                 (the leaky HMM)
    alpha(t+1, j) = sum_{a: dst(a)=j} alpha'(t, src(a)) * p_a * x(t, pdf(a)) / tot(t)
    log-prob      = log(sum_i alpha'(T, i)) + sum_{t=0}^{T-1} log tot(t)

Kaldi divides by tot(t) every frame (chain-denominator.cc AlphaGeneralFrame), so the alphas stay
near one without ever leaving the device: no host synchronisation in the loop. Without the
division (which cancels in the log-prob) the value is log Z with

    Z = 1' L M_{T-1} L ... L M_1 L M_0 L init,   L = I + c * init 1',   M_t[j, i] = sum_{a: i->j} p_a x(t, pdf(a))

that is, the sum over paths of this process (the leaky-HMM definition the tests enumerate):
start in state i with probability init(i); at every frame boundary t = 0..T either stay (weight
1) or leak from wherever the path is to any state j (weight c * init(j)); between boundaries t and
t+1 take an arc a out of the current state (weight p_a * x(t, pdf(a))); every state is final with
weight 1. (Kaldi's comment in chain-training.h: an epsilon transition to a special state with
probability one, and from it to each state j with probability c * init(j), at most one leak per
frame.) The derivative of log Z with respect to y(t, n) is the expected number of arcs with pdf n
taken at frame t, gamma(t, n); Kaldi's backward (BetaDashGeneralFrame, Beta) computes it as

    beta'(T, i)  = 1 / sum_i alpha'(T, i)
    beta(t, i)   = beta'(t, i) + c * sum_j init(j) beta'(t, j)
    beta'(t, i)  = sum_{a: src(a)=i} p_a x(t, pdf(a)) beta(t+1, dst(a)) / tot(t)
    gamma(t, n)  = sum_{a: pdf(a)=n} alpha'(t, src(a)) p_a x(t, n) beta(t+1, dst(a)) / tot(t)

and, as Kaldi does, that gamma is the derivative also where y was clamped (Kaldi warns that
outputs outside [-30, 30] make derivatives inaccurate; `--out-of-range-regularize` keeps them in).
Kaldi's frame-0 checks (BetaGeneralFrameDebug): sum_i alpha'(0, i) beta'(0, i) and sum_n gamma(0, n)
must both be num_sequences within 2.0, else the minibatch is abandoned (`ok` false).

Precision. Kaldi keeps x, alpha, beta, the arc probabilities and the derivatives in BaseFloat
(float32); it accumulates each state's sum over arcs in double (the CPU loops and the CUDA
kernels), computes the initial probabilities in double, and its CUDA kernels prune posteriors
below 2^-14 at random (atomic_add_thresholded), the CPU code does not. Here everything follows the
dtype of the network output (float32 in training, float64 in the tests), the sums over arcs
included (index_add_), initial probabilities in double as Kaldi, the posteriors exact (no
pruning), and the per-frame logs summed in double.

Vectorisation: one frame is a gather of alpha' over the arcs' source states and of x over their
pdfs, a product with p, and an index_add_ into the destination states (the backward: the same over
destination states, index_add_ into the source states and into the pdfs), all sequences of the
minibatch at once as the last (contiguous) dimension: [states, sequences] matrices as Kaldi lays
out alpha_. The forward visits the arcs sorted by destination and the backward by source (Kaldi's
backward and forward transition lists), so the index_add_ into states runs over sorted indices;
the [arcs, sequences] work buffers are allocated once per pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .den_graph import initial_probs, initial_probs_of_arcs  # SetInitialProbs, as chain-make-den-fst

OUTPUT_LIMIT = 30.0          # ApplyExpLimited(-30, 30) in DenominatorComputation's constructor
OK_TOLERANCE = 2.0           # BetaGeneralFrameDebug: "Excessive error detected" beyond this


class DenominatorGraph:
    """den.fst as tensors (Kaldi's `DenominatorGraph`). Arcs in Kaldi's forward order; `prob`
    and `initial_probs` in `dtype` (float32, Kaldi's BaseFloat, unless asked otherwise)."""

    def __init__(self, num_states: int, num_pdfs: int, src: torch.Tensor, dst: torch.Tensor, pdf: torch.Tensor,
                 prob: torch.Tensor, initial_probs: torch.Tensor):
        self.num_states = int(num_states)
        self.num_pdfs = int(num_pdfs)
        self.src = src.long()
        self.dst = dst.long()
        self.pdf = pdf.long()
        self.prob = prob
        self.initial_probs = initial_probs
        if not (self.src.shape == self.dst.shape == self.pdf.shape == self.prob.shape) or self.src.dim() != 1:
            raise ValueError("src, dst, pdf and prob must be vectors of one length (one entry per arc)")
        if self.initial_probs.shape != (self.num_states,):
            raise ValueError(f"initial_probs has shape {tuple(self.initial_probs.shape)}, "
                             f"expected ({self.num_states},)")
        # the arcs into each state (Kaldi's backward_transitions order: by destination, then as
        # above), for the forward pass: its index_add_ then runs over sorted indices (on a CPU
        # several times faster than over unsorted ones)
        into = torch.argsort(self.dst, stable=True)
        self.in_src, self.in_dst, self.in_pdf = self.src[into], self.dst[into], self.pdf[into]
        self.in_prob = self.prob[into]

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, num_states: int, num_pdfs: int, src, dst, pdf, prob=None, *, weight=None,
                    start: int | None = None, final_prob=None, initial_probs=None,
                    dtype: torch.dtype = torch.float32, device=None) -> DenominatorGraph:
        """Arcs from arrays: `pdf` is the pdf-id (0-based), `prob` the transition probability
        (or `weight`, its tropical weight -log prob). The initial probabilities are given, or
        computed as Kaldi does from `start` and `final_prob` (exp(-final weight) per state, 0 for
        non-final; default all 0)."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        pdf = np.asarray(pdf, dtype=np.int64)
        if (prob is None) == (weight is None):
            raise ValueError("give exactly one of prob and weight")
        prob64 = np.exp(-np.asarray(weight, dtype=np.float64)) if prob is None else np.asarray(prob, np.float64)
        for name, a, hi in (("src", src, num_states), ("dst", dst, num_states), ("pdf", pdf, num_pdfs)):
            if a.size and (a.min() < 0 or a.max() >= hi):
                raise ValueError(f"{name} out of range [0, {hi})")
        if initial_probs is None:
            if start is None:
                raise ValueError("give initial_probs, or start (and final_prob) to compute them as Kaldi does")
            final = np.zeros(num_states) if final_prob is None else np.asarray(final_prob, dtype=np.float64)
            initial_probs = initial_probs_of_arcs(num_states, start, src, dst, prob64, final)
        order = np.argsort(src, kind="stable")          # Kaldi's forward order: by source state
        t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)
        return cls(num_states, num_pdfs, t(src[order], torch.long), t(dst[order], torch.long),
                   t(pdf[order], torch.long), t(prob64[order], dtype), t(np.asarray(initial_probs), dtype))

    @classmethod
    def from_fst(cls, fst, num_pdfs: int | None = None, dtype: torch.dtype = torch.float32,
                 device=None) -> DenominatorGraph:
        """From den.fst (a kaldifst.StdVectorFst or a path): labels are pdf-id + 1 (epsilon-free).
        `num_pdfs` is the network's output dim (Kaldi checks every label against it); by default
        the largest label."""
        import kaldifst

        if isinstance(fst, (str, Path)):
            fst = kaldifst.StdVectorFst.read(str(fst))
        num_states = fst.num_states
        src, dst, label, weight = [], [], [], []
        for s in range(num_states):
            for arc in kaldifst.ArcIterator(fst, s):
                src.append(s)
                dst.append(arc.nextstate)
                label.append(arc.ilabel)
                weight.append(arc.weight.value)
        label = np.asarray(label, dtype=np.int64)
        if label.size and label.min() <= 0:
            raise ValueError("den graph has an epsilon (label 0); Kaldi needs an epsilon-free acceptor")
        if num_pdfs is None:
            num_pdfs = int(label.max())
        if label.max() > num_pdfs:
            raise ValueError(f"den graph has pdf-id {int(label.max()) - 1}, the network has {num_pdfs} pdfs")
        # exp(-w) of the float weight, rounded to BaseFloat (SetTransitions)
        return cls.from_arrays(num_states, num_pdfs, src, dst, label - 1,
                               weight=np.asarray(weight, dtype=np.float32).astype(np.float64),
                               initial_probs=initial_probs(fst), dtype=dtype, device=device)

    # -- properties ---------------------------------------------------------------------------
    @property
    def num_arcs(self) -> int:
        return int(self.src.numel())

    @property
    def device(self) -> torch.device:
        return self.prob.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prob.dtype

    def to(self, device=None, dtype: torch.dtype | None = None) -> DenominatorGraph:
        """This graph on `device` with probabilities in `dtype` (itself if nothing changes)."""
        dtype = dtype or self.dtype
        if (device is None or torch.device(device) == self.device) and dtype == self.dtype:
            return self
        return DenominatorGraph(self.num_states, self.num_pdfs, self.src.to(device), self.dst.to(device),
                                self.pdf.to(device), self.prob.to(device, dtype),
                                self.initial_probs.to(device, dtype))

    def __repr__(self) -> str:
        return (f"DenominatorGraph({self.num_states} states, {self.num_arcs} arcs, {self.num_pdfs} pdfs, "
                f"{self.device}, {self.dtype})")


def normalization_fst_initial_probs(normalization_fst, den_fst) -> np.ndarray:
    """The initial probabilities chain-make-den-fst wrote into normalization.fst, read back.

    `DenominatorGraph::GetNormalizationFst` adds a start state with an epsilon arc of weight
    -log init(s) to every den.fst state s, makes every state final with weight one, then
    RmEpsilon: the new start state's arcs are den.fst's arcs of every s with -log init(s) added
    (arcs that coincide in label and destination merged by tropical min) and states that became
    unreachable (den.fst's start, which has no incoming arcs) removed, the others keeping their
    order. So for each den.fst state s, -log init(s) = max over its arcs a of (weight of the start
    arc with a's label and destination) - weight(a), exact unless every arc of s lost a merge."""
    import kaldifst
    if isinstance(normalization_fst, (str, Path)):
        normalization_fst = kaldifst.StdVectorFst.read(str(normalization_fst))
    if isinstance(den_fst, (str, Path)):
        den_fst = kaldifst.StdVectorFst.read(str(den_fst))
    n = den_fst.num_states
    has_incoming = np.zeros(n, dtype=bool)
    arcs = [[(a.ilabel, a.nextstate, a.weight.value) for a in kaldifst.ArcIterator(den_fst, s)] for s in range(n)]
    for s in range(n):
        for _, d, _ in arcs[s]:
            has_incoming[d] = True
    kept = np.flatnonzero(has_incoming)
    new_index = {int(s): i for i, s in enumerate(kept)}
    if normalization_fst.num_states != len(kept) + 1:
        raise ValueError(f"normalization FST has {normalization_fst.num_states} states, expected {len(kept) + 1}")
    start_arcs = {}
    for a in kaldifst.ArcIterator(normalization_fst, normalization_fst.start):
        start_arcs[(a.ilabel, a.nextstate)] = a.weight.value
    neg_log = np.full(n, -np.inf)
    for s in range(n):
        for label, d, w in arcs[s]:
            key = (label, new_index[d])
            neg_log[s] = max(neg_log[s], start_arcs[key] - w)
    return np.exp(-neg_log)


@dataclass
class DenominatorResult:
    """One minibatch's denominator: `logprob` per sequence (double: the logs of the working dtype's
    per-frame sums, summed in double), `tot_log_prob` their sum, `deriv` the posteriors gamma in
    the network output's layout ([frames * sequences, pdfs], frame-major) when asked for,
    `ok` a 0-dim bool tensor (Kaldi's frame-0 checks)."""
    logprob: torch.Tensor
    deriv: torch.Tensor | None = None
    ok: torch.Tensor | None = None
    alpha_beta_product: torch.Tensor | None = None    # frame 0: should equal num_sequences
    deriv_sum: torch.Tensor | None = None             # frame 0: should equal num_sequences

    @property
    def tot_log_prob(self) -> torch.Tensor:
        return self.logprob.sum()


class DenominatorComputation:
    """Kaldi's `DenominatorComputation` (chain-denominator.cc) for `num_sequences` sequences of
    equal length: `forward()` returns the total log-prob over the sequences, `backward(w)` the
    derivative w * gamma of it with respect to the network output (and the ok flag)."""

    def __init__(self, graph: DenominatorGraph, nnet_output: torch.Tensor, num_sequences: int,
                 leaky_hmm_coefficient: float = 1e-5):
        if nnet_output.dim() != 2 or nnet_output.shape[1] != graph.num_pdfs:
            raise ValueError(f"nnet output has shape {tuple(nnet_output.shape)}; expected [frames * sequences, "
                             f"{graph.num_pdfs}]")
        if nnet_output.shape[0] % num_sequences:
            raise ValueError(f"{nnet_output.shape[0]} rows is not a multiple of {num_sequences} sequences")
        if not 0.0 <= leaky_hmm_coefficient < 1.0:
            raise ValueError(f"leaky-hmm-coefficient {leaky_hmm_coefficient} is not in [0, 1)")
        self.graph = graph.to(nnet_output.device, nnet_output.dtype)
        self.num_sequences = B = num_sequences
        self.frames = T = nnet_output.shape[0] // B
        self.c = float(leaky_hmm_coefficient)
        self.shape = nnet_output.shape
        # exp_nnet_output_transposed_: [T, pdfs, B], the sequences contiguous
        y = nnet_output.detach()
        self.x = y.clamp(-OUTPUT_LIMIT, OUTPUT_LIMIT).exp_().view(T, B, graph.num_pdfs).transpose(1, 2).contiguous()
        self.alpha_dash: torch.Tensor | None = None     # [T+1, S, B]
        self.tot_alpha: torch.Tensor | None = None      # [T+1, B]
        self.tot_prob: torch.Tensor | None = None       # [B]

    def _leak(self, a: torch.Tensor, tot: torch.Tensor) -> torch.Tensor:
        """alpha' = alpha + c * tot * init (AlphaDash), in place."""
        if self.c:
            a.addcmul_(self.graph.initial_probs.unsqueeze(1), tot.unsqueeze(0), value=self.c)
        return a

    def forward_per_sequence(self) -> torch.Tensor:
        g, T, B = self.graph, self.frames, self.num_sequences
        S = g.num_states
        alpha_dash = torch.empty(T + 1, S, B, dtype=self.x.dtype, device=self.x.device)
        tot_alpha = torch.empty(T + 1, B, dtype=self.x.dtype, device=self.x.device)
        init = g.initial_probs.unsqueeze(1)
        alpha_dash[0].copy_(init.expand(S, B))                      # AlphaFirstFrame
        torch.sum(alpha_dash[0], 0, out=tot_alpha[0])
        self._leak(alpha_dash[0], tot_alpha[0])
        prob = g.in_prob.unsqueeze(1)
        w = torch.empty(g.num_arcs, B, dtype=self.x.dtype, device=self.x.device)
        xa = torch.empty_like(w)
        for t in range(1, T + 1):                                   # AlphaGeneralFrame + AlphaDash
            torch.index_select(alpha_dash[t - 1], 0, g.in_src, out=w)
            torch.index_select(self.x[t - 1], 0, g.in_pdf, out=xa)
            w.mul_(xa).mul_(prob)
            a = alpha_dash[t]
            a.zero_().index_add_(0, g.in_dst, w)
            a.mul_(tot_alpha[t - 1].reciprocal().unsqueeze(0))     # arbitrary_scale = 1 / tot(t-1)
            torch.sum(a, 0, out=tot_alpha[t])
            self._leak(a, tot_alpha[t])
        self.alpha_dash, self.tot_alpha = alpha_dash, tot_alpha
        self.tot_prob = alpha_dash[T].sum(0)                       # ComputeTotLogLike
        log_scales = tot_alpha[:T].log().double().sum(0)
        return self.tot_prob.log().double() + log_scales

    def forward(self) -> torch.Tensor:
        """The total log-prob over the sequences (0-dim double tensor)."""
        self.logprob = self.forward_per_sequence()
        return self.logprob.sum()

    def backward(self, deriv_weight: float | torch.Tensor = 1.0) -> DenominatorResult:
        """deriv_weight * gamma in the network output's layout. `deriv_weight` is a number or a
        [num_sequences] tensor (per-sequence weights, e.g. an upstream gradient)."""
        if self.alpha_dash is None:
            self.forward()
        g, T, B, c = self.graph, self.frames, self.num_sequences, self.c
        S, P = g.num_states, g.num_pdfs
        alpha_dash, tot_alpha = self.alpha_dash, self.tot_alpha
        init = g.initial_probs
        prob = g.prob.unsqueeze(1)
        gamma = torch.empty(T, P, B, dtype=self.x.dtype, device=self.x.device)
        beta = self.tot_prob.reciprocal().unsqueeze(0).expand(S, B).clone()   # BetaDashLastFrame
        if c:
            beta.add_((c * (init @ beta)).unsqueeze(0))                         # Beta(T)
        alpha_beta_product = deriv_sum = None
        v = torch.empty(g.num_arcs, B, dtype=self.x.dtype, device=self.x.device)
        xa = torch.empty_like(v)
        for t in range(T - 1, -1, -1):                                          # BetaDashGeneralFrame
            inv_arbitrary_scale = tot_alpha[t].reciprocal().unsqueeze(0)
            torch.index_select(beta, 0, g.dst, out=v)
            torch.index_select(self.x[t], 0, g.pdf, out=xa)
            v.mul_(xa).mul_(prob)                                               # variable_factor
            beta_dash = torch.zeros(S, B, dtype=v.dtype, device=v.device).index_add_(0, g.src, v)
            beta_dash.mul_(inv_arbitrary_scale)
            torch.index_select(alpha_dash[t], 0, g.src, out=xa)
            v.mul_(xa).mul_(inv_arbitrary_scale)                                # occupation_prob
            gamma[t].zero_().index_add_(0, g.pdf, v)
            if t == 0:                                                          # BetaGeneralFrameDebug(0)
                alpha_beta_product = (alpha_dash[0] * beta_dash).sum()
                deriv_sum = gamma[0].sum()
            beta = beta_dash
            if c:
                beta.add_((c * (init @ beta_dash)).unsqueeze(0))               # Beta(t)
        ok = ((alpha_beta_product - B).abs() <= OK_TOLERANCE) & ((deriv_sum - B).abs() <= OK_TOLERANCE)
        if isinstance(deriv_weight, torch.Tensor):
            gamma.mul_(deriv_weight.to(gamma).view(1, 1, B))
        elif deriv_weight != 1.0:
            gamma.mul_(deriv_weight)
        deriv = gamma.transpose(1, 2).reshape(self.shape)
        return DenominatorResult(self.logprob, deriv, ok, alpha_beta_product, deriv_sum)


def denominator_forward_backward(graph: DenominatorGraph, nnet_output: torch.Tensor, num_sequences: int,
                                 leaky_hmm_coefficient: float = 1e-5, compute_deriv: bool = True,
                                 deriv_weight: float = 1.0) -> DenominatorResult:
    """Forward (and backward) of the denominator over one minibatch, outside autograd."""
    with torch.no_grad():
        comp = DenominatorComputation(graph, nnet_output, num_sequences, leaky_hmm_coefficient)
        comp.forward()
        if not compute_deriv:
            return DenominatorResult(comp.logprob)
        return comp.backward(deriv_weight)


class _DenominatorLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nnet_output, graph, num_sequences, leaky_hmm_coefficient):
        comp = DenominatorComputation(graph, nnet_output, num_sequences, leaky_hmm_coefficient)
        logprob = comp.forward_per_sequence()
        comp.logprob = logprob
        ctx.comp = comp
        return logprob.to(nnet_output.dtype)

    @staticmethod
    def backward(ctx, grad_logprob):
        comp = ctx.comp
        ctx.comp = None
        with torch.no_grad():
            deriv = comp.backward(grad_logprob).deriv
        return deriv, None, None, None


def denominator_logprob(nnet_output: torch.Tensor, graph: DenominatorGraph, num_sequences: int,
                        leaky_hmm_coefficient: float = 1e-5) -> torch.Tensor:
    """Per-sequence denominator log-prob [num_sequences] with autograd: its gradient with
    respect to `nnet_output` is Kaldi's (gamma, also where the output was clamped to [-30, 30])."""
    return _DenominatorLogprob.apply(nnet_output, graph, num_sequences, leaky_hmm_coefficient)
