"""The LF-MMI numerator: forward-backward over the supervision FSTs (Kaldi's
`NumeratorComputation`, src/chain/chain-numerator.{h,cc}; docs/chain.md 5).

For one sequence with supervision FST arcs a (src, dst, pdf(a) = label - 1, tropical weight w_a),
start state 0 and final weights f_s, and network output y (not clamped: the numerator does not
exponentiate, it works in log space):

    log-alpha(0)   = 0
    log-alpha(j)   = logsum_{a: dst(a)=j} log-alpha(src(a)) - w_a + y(t(a), pdf(a))
    log-prob       = logsum_s log-alpha(s) - f_s
    log-beta(s)    = logsum( -f_s, logsum_{a: src(a)=s} log-beta(dst(a)) - w_a + y(t(a), pdf(a)) )
    post(t, n)     = sum_{a at frame t, pdf(a)=n} exp(log-alpha(src) - w_a + y(t, n) + log-beta(dst) - log-prob)

where t(a) is the frame of the arc's source state (`ComputeFstStateTimes`). Kaldi returns
weight * log-prob summed over the sequences and adds weight * post to the derivative (the
posteriors also being the targets of the `output-xent` branch). The posteriors of a frame sum to
one (every path takes one arc per frame), and d log-prob / d y(t, n) = post(t, n).

Precision: as Kaldi, log-alpha, log-beta and the log-prob in double, the network output read as
BaseFloat; the posteriors are returned in the output's dtype.

Batching: Kaldi runs the merged FST on the CPU, one state after another. Here the sequences'
FSTs are laid side by side and stepped one frame at a time: each frame is one gather over that
frame's arcs of all sequences, a scatter-logsumexp into the next frame's states (their numbers
contiguous per frame) and, backward, the same into the frame's source states; the frame ranges
are host integers fixed when the graph is built, so the loop never waits on the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .supervision_io import Supervision, batched_state_times


class _LogSumScatter:
    """out[i] = log sum_{k: index[k]=i} exp(values[k]) into slices of one state vector, with
    buffers allocated once per pass (the max and the sum of every state)."""

    def __init__(self, size: int, like: torch.Tensor):
        self.m = torch.full((size,), -torch.inf, dtype=like.dtype, device=like.device)
        self.s = torch.zeros(size, dtype=like.dtype, device=like.device)
        self.floor = torch.finfo(like.dtype).min     # a state reached only by -inf stays -inf

    def __call__(self, values: torch.Tensor, index: torch.Tensor, begin: int, end: int, out: torch.Tensor) -> None:
        m = self.m[begin:end].scatter_reduce_(0, index, values, reduce="amax").clamp_(min=self.floor)
        e = values.sub_(m[index]).exp_()
        torch.log(self.s[begin:end].index_add_(0, index, e), out=out).add_(m)


@dataclass
class NumeratorGraph:
    """The supervision FSTs of a minibatch as frame-sorted arrays: states numbered by (frame,
    sequence, state), arcs by (frame, sequence); `state_offsets[t]` and `arc_offsets[t]` the
    ranges of frame t (host integers)."""
    num_sequences: int
    frames_per_sequence: int
    label_dim: int
    weight: float
    state_offsets: list[int]       # T + 2 entries: states of frame t are [so[t], so[t+1])
    arc_offsets: list[int]         # T + 1 entries: arcs leaving frame t are [ao[t], ao[t+1])
    arc_src: torch.Tensor          # local index among the states of the arc's frame
    arc_dst: torch.Tensor          # local index among the states of the next frame
    arc_logprob: torch.Tensor      # -weight (double)
    arc_pdf: torch.Tensor
    arc_row: torch.Tensor          # row of the network output: frame * num_sequences + sequence
    arc_seq: torch.Tensor
    final_logprob: torch.Tensor    # -final weight of the states of frame T (double)
    final_seq: torch.Tensor        # their sequences

    @classmethod
    def from_supervision(cls, sup: Supervision, device=None) -> NumeratorGraph:
        B, T = sup.num_sequences, sup.frames_per_sequence
        fsts = sup.fsts
        sizes = np.array([f.num_states for f in fsts])
        base = np.concatenate([[0], np.cumsum(sizes)])
        n_arcs = np.array([f.num_arcs for f in fsts])
        src = np.concatenate([base[k] + f.src for k, f in enumerate(fsts)])
        dst = np.concatenate([base[k] + f.dst for k, f in enumerate(fsts)])
        label = np.concatenate([f.label for f in fsts])
        weight = np.concatenate([f.weight for f in fsts]).astype(np.float64)
        final = np.concatenate([f.final for f in fsts]).astype(np.float64)
        times = batched_state_times(int(base[-1]), src, dst, label, final, base[:-1])
        seq = np.repeat(np.arange(B), sizes)
        ends = times[np.isfinite(final)]
        if times.max() != T or np.any(ends != T):
            bad = int(seq[np.isfinite(final)][ends != T][0]) if np.any(ends != T) else int(seq[times.argmax()])
            raise ValueError(f"sequence {bad}: supervision FST does not end at frame {T}")
        if label.size and label.max() > sup.label_dim:
            raise ValueError(f"pdf-id {int(label.max()) - 1} >= label dim {sup.label_dim}")
        order = np.lexsort((np.arange(len(times)), seq, times))      # states by (frame, sequence, state)
        state_offsets = np.searchsorted(times[order], np.arange(T + 2)).tolist()
        new_global = np.empty(len(order), dtype=np.int64)
        new_global[order] = np.arange(len(order))
        local = new_global - np.asarray(state_offsets)[times]         # number within its frame
        a_frame = times[src]
        a_seq = np.repeat(np.arange(B), n_arcs)
        a_order = np.lexsort((a_seq, a_frame))                       # arcs by (frame, sequence)
        arc_offsets = np.searchsorted(a_frame[a_order], np.arange(T + 1)).tolist()
        last = order[state_offsets[T]:state_offsets[T + 1]]            # frame-T states, new order
        t = lambda a, dt: torch.as_tensor(np.ascontiguousarray(a), dtype=dt, device=device)
        return cls(B, T, sup.label_dim, float(sup.weight), state_offsets, arc_offsets,
                   t(local[src][a_order], torch.long), t(local[dst][a_order], torch.long),
                   t(-weight[a_order], torch.float64), t(label[a_order] - 1, torch.long),
                   t(a_frame[a_order] * B + a_seq[a_order], torch.long), t(a_seq[a_order], torch.long),
                   t(-final[last], torch.float64), t(seq[last], torch.long))

    def to(self, device) -> NumeratorGraph:
        moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        return NumeratorGraph(**moved)


@dataclass
class NumeratorResult:
    logprob: torch.Tensor                 # per sequence, double, not weighted
    tot_log_prob: torch.Tensor            # weight * sum (Kaldi's Forward())
    deriv: torch.Tensor | None = None     # weight * posteriors, [frames * sequences, pdfs]


class NumeratorComputation:
    """Kaldi's `NumeratorComputation`: `forward()` is weight * the log-prob summed over the
    sequences, `backward()` weight * the posteriors in the network output's layout."""

    def __init__(self, graph: NumeratorGraph, nnet_output: torch.Tensor):
        B, T = graph.num_sequences, graph.frames_per_sequence
        if nnet_output.shape != (B * T, graph.label_dim):
            raise ValueError(f"nnet output has shape {tuple(nnet_output.shape)}, the supervision needs "
                             f"({B * T}, {graph.label_dim})")
        self.graph = graph.to(nnet_output.device) if graph.arc_src.device != nnet_output.device else graph
        self.nnet_output = nnet_output
        self.log_alpha: list[torch.Tensor] | None = None

    def forward_per_sequence(self) -> torch.Tensor:
        g = self.graph
        y = self.nnet_output.detach()
        so = g.state_offsets
        # the arcs' log-likelihoods: the output looked up (BaseFloat), then in double
        self.arc_like = g.arc_logprob + y.reshape(-1)[g.arc_row * g.label_dim + g.arc_pdf].double()
        log_alpha = torch.full((so[-1],), -torch.inf, dtype=torch.float64, device=y.device)
        log_alpha[so[0]:so[1]] = 0.0                                    # the start states
        lse = _LogSumScatter(so[-1], self.arc_like)
        for t in range(g.frames_per_sequence):
            a0, a1 = g.arc_offsets[t], g.arc_offsets[t + 1]
            v = log_alpha[so[t]:so[t + 1]][g.arc_src[a0:a1]].add_(self.arc_like[a0:a1])
            lse(v, g.arc_dst[a0:a1], so[t + 1], so[t + 2], log_alpha[so[t + 1]:so[t + 2]])
        self.log_alpha = log_alpha
        last = log_alpha[so[-2]:so[-1]] + g.final_logprob
        out = torch.empty(g.num_sequences, dtype=torch.float64, device=y.device)
        _LogSumScatter(g.num_sequences, last)(last, g.final_seq, 0, g.num_sequences, out)
        self.logprob = out
        return out

    def forward(self) -> torch.Tensor:
        return self.forward_per_sequence().sum() * self.graph.weight

    def backward(self, deriv_weight: float | torch.Tensor = 1.0, supervision_weight: bool = True) -> torch.Tensor:
        """deriv_weight * weight * posteriors, [frames * sequences, pdfs] (without the supervision
        weight if `supervision_weight` is false); `deriv_weight` a number or a [num_sequences]
        tensor."""
        if self.log_alpha is None:
            self.forward()
        g = self.graph
        so = g.state_offsets
        T = g.frames_per_sequence
        occ = torch.empty_like(self.arc_like)
        log_beta = torch.full_like(self.log_alpha, -torch.inf)
        log_beta[so[T]:so[T + 1]] = g.final_logprob                 # no final states before frame T
        lse = _LogSumScatter(so[-1], self.arc_like)
        for t in range(T - 1, -1, -1):
            a0, a1 = g.arc_offsets[t], g.arc_offsets[t + 1]
            v = log_beta[so[t + 1]:so[t + 2]][g.arc_dst[a0:a1]].add_(self.arc_like[a0:a1])
            src = g.arc_src[a0:a1]
            torch.add(self.log_alpha[so[t]:so[t + 1]][src], v, out=occ[a0:a1])
            lse(v, src, so[t], so[t + 1], log_beta[so[t]:so[t + 1]])
        self.log_beta = log_beta
        post = occ.sub_(self.logprob[g.arc_seq]).exp_()
        scale = g.weight if supervision_weight else 1.0
        if isinstance(deriv_weight, torch.Tensor):
            post = post * deriv_weight.to(post)[g.arc_seq]
        else:
            scale *= deriv_weight
        deriv = torch.zeros(self.nnet_output.numel(), dtype=torch.float64, device=post.device)
        deriv.index_add_(0, g.arc_row * g.label_dim + g.arc_pdf, post)
        return (deriv * scale).to(self.nnet_output.dtype).view(self.nnet_output.shape)


def numerator_forward_backward(graph: NumeratorGraph, nnet_output: torch.Tensor,
                               compute_deriv: bool = True) -> NumeratorResult:
    with torch.no_grad():
        comp = NumeratorComputation(graph, nnet_output)
        tot = comp.forward()
        return NumeratorResult(comp.logprob, tot, comp.backward() if compute_deriv else None)


class _NumeratorLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, nnet_output, graph):
        comp = NumeratorComputation(graph, nnet_output)
        logprob = comp.forward_per_sequence()
        ctx.comp = comp
        return logprob.to(nnet_output.dtype)

    @staticmethod
    def backward(ctx, grad_logprob):
        comp = ctx.comp
        ctx.comp = None
        with torch.no_grad():
            deriv = comp.backward(grad_logprob, supervision_weight=False)
        return deriv, None


def numerator_logprob(nnet_output: torch.Tensor, graph: NumeratorGraph) -> torch.Tensor:
    """Per-sequence numerator log-prob (not weighted) with autograd (gradient: the posteriors)."""
    return _NumeratorLogprob.apply(nnet_output, graph)
