"""Kaldi's fast LSTM layers (fast-lstm-layer, fast-lstmp-layer) stepped as one autograd node.

The graph executor (`graph.py`) steps any recurrent loop node by node, frame by frame, with
autograd recording every operation; for the loops that xconfig's fast LSTM layers produce that
costs some 40 tensor operations and autograd nodes per frame. `match` recognizes such a loop
in the node graph:

    W_all   = affine(Append(<outside input>, IfDefined(Offset(rec_trunc, delay))))
    nonlin  = LstmNonlinearity(Append(W_all, IfDefined(Offset(c_trunc, delay)) [, dropout mask]))
    c, m    = dim-range(nonlin, 0, C), dim-range(nonlin, C, C)
    [rp     = affine(m)       r = dim-range(rp, 0, P)]                 (fast-lstmp-layer)
    trunc   = BackpropTruncation(nonlin)  or  BackpropTruncation(Append(c, r))
    c_trunc, rec_trunc = dim-range(trunc, 0, C), dim-range(trunc, C, ...)

and `FastLstmLoop` computes it with the same equations (docs/kaldi-formats.md 4.7, 4.8):
the outside input's product for all frames in one GEMM, then per frame one GEMM and a few
in-place elementwise operations into preallocated time-major buffers; the backward pass is
written out by hand, with everything that does not depend on the recurrence (the
nonlinearities' derivatives, the parameter derivatives, the derivative w.r.t. the outside
input) computed for all frames at once. Derivatives stop at frames outside
[min_deriv_time, max_deriv_time] as in the executor; the natural-gradient rows of W_all and
W_rp ([outside input | recurrent input] and the derivative rows of the frames with
derivatives) go to the components' `NaturalGradientPass`, which then computes their update,
so the plain weight gradients are not formed. `tests/model/test_lstm_loop.py` checks values,
gradients, natural-gradient updates and statistics against the frame-by-frame executor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kaldi.nnet3.context import node_input
from ..kaldi.nnet3.descriptor import Append, Descriptor, IfDefined, NodeRef, Offset, descriptor_dim
from ..kaldi.nnet3.nnet import ComponentNode, DimRangeNode, Nnet
from .ops import AFFINE_TYPES, truncate_derivative, truncation_crossings


@dataclass(frozen=True)
class FastLstmLayer:
    """The nodes of one fast LSTM loop (node names) and its shape."""
    w_all: str
    nonlin: str
    trunc: str
    proj: str | None          # fast-lstmp-layer's W_rp node (rp), None for fast-lstm-layer
    outside: tuple[Descriptor, ...]   # the parts of W_all's input from outside the loop
    mask: Descriptor | None   # the dropout-mask part of the nonlinearity's input
    delay: int                # the recurrence reads frame t + delay
    cell_dim: int
    rec_dim: int              # dim of the recurrent input: P (lstmp) or C
    # dim-range members: name -> (source node, offset, dim)
    ranges: tuple[tuple[str, str, int, int], ...]


def match(nnet: Nnet, members: list[str]) -> FastLstmLayer | None:
    """The fast LSTM layer that the loop `members` is, or None (the loop is stepped generically)."""
    nodes = {m: nnet.node(m) for m in members}
    comps = {m: n for m, n in nodes.items() if isinstance(n, ComponentNode)}
    ranges = {m: n for m, n in nodes.items() if isinstance(n, DimRangeNode)}
    if len(comps) + len(ranges) != len(members):
        return None
    by_type: dict[str, list[str]] = {}
    for m, n in comps.items():
        by_type.setdefault(type(nnet.components[n.component]).__name__, []).append(m)
    nonlins = by_type.get("LstmNonlinearityComponent", [])
    truncs = by_type.get("BackpropTruncationComponent", [])
    if len(nonlins) != 1 or len(truncs) != 1:
        return None
    nonlin, trunc = nonlins[0], truncs[0]
    C = nnet.components[comps[nonlin].component].cell_dim()
    affines = [m for m in comps if m not in (nonlin, trunc)]
    if any(type(nnet.components[comps[m].component]).__name__ not in AFFINE_TYPES for m in affines):
        return None

    def is_range(name, src, offset, dim):
        r = ranges.get(name)
        return r is not None and (r.input_node, r.dim_offset, r.dim) == (src, offset, dim)

    # The nonlinearity: Append(W_all, IfDefined(Offset(c_trunc, d)) [, mask]).
    d_in = node_input(nnet, comps[nonlin])
    if not isinstance(d_in, Append) or len(d_in.args) not in (2, 3):
        return None
    w_ref, c_rec = d_in.args[0], d_in.args[1]
    mask = d_in.args[2] if len(d_in.args) == 3 else None
    if not (isinstance(w_ref, NodeRef) and w_ref.name in affines and _recurrence(c_rec)):
        return None
    w_all = w_ref.name
    c_trunc, delay = _recurrence(c_rec)
    if mask is not None and (_reads(mask, members) or descriptor_dim(mask, nnet.node_dim) != 3):
        return None
    # W_all: Append(<outside>..., IfDefined(Offset(rec_trunc, d))), the same delay.
    a_in = node_input(nnet, comps[w_all])
    if not isinstance(a_in, Append) or not _recurrence(a_in.args[-1]):
        return None
    rec_trunc, a_delay = _recurrence(a_in.args[-1])
    outside = tuple(a_in.args[:-1])
    if a_delay != delay or any(_reads(p, members) for p in outside) or not outside:
        return None
    # The truncation and the projection.
    t_in = node_input(nnet, comps[trunc])
    projs = [m for m in affines if m != w_all]
    if not projs:                                          # fast-lstm-layer: trunc(nonlin)
        if t_in != NodeRef(nonlin):
            return None
        proj, P = None, C
    else:                                                  # fast-lstmp-layer: trunc(Append(c, r))
        if len(projs) != 1:
            return None
        proj = projs[0]
        if not isinstance(t_in, Append) or len(t_in.args) != 2 or not all(isinstance(a, NodeRef) for a in t_in.args):
            return None
        c_name, r_name = (a.name for a in t_in.args)
        P = ranges[r_name].dim if r_name in ranges else -1
        p_in = node_input(nnet, comps[proj])
        if not (is_range(c_name, nonlin, 0, C) and is_range(r_name, proj, 0, P) and isinstance(p_in, NodeRef)
                and is_range(p_in.name, nonlin, C, C)):
            return None
    if not (is_range(c_trunc, trunc, 0, C) and is_range(rec_trunc, trunc, C, P)):
        return None
    # Every dim-range member is one of the known ones.
    known = {(nonlin, 0, C), (nonlin, C, C), (trunc, 0, C), (trunc, C, P)} | ({(proj, 0, P)} if proj else set())
    if any((r.input_node, r.dim_offset, r.dim) not in known for r in ranges.values()):
        return None
    return FastLstmLayer(w_all, nonlin, trunc, proj, outside, mask, delay, C, P,
                         tuple((m, r.input_node, r.dim_offset, r.dim) for m, r in ranges.items()))


def fits(layer: FastLstmLayer, need: dict[str, tuple[int, int]]) -> bool:
    """Whether the executor's frame plan `need` is what the fused loop computes: W_all, the
    nonlinearity and the projection on the same frames lo..hi, and the other members on frames
    within them that include every frame the recurrence reads (lo..hi+delay, or lo+delay..hi
    for a backward loop). A member the rest of the network does not read at some frame of
    lo..hi (the truncation at the last frame of a forward loop) is computed there without effect."""
    lo, hi = need[layer.nonlin]
    if lo > hi or any(need[n] != (lo, hi) for n in (layer.w_all, layer.proj) if n):
        return False
    read = (lo, hi + layer.delay) if layer.delay < 0 else (lo + layer.delay, hi)
    others = [layer.trunc] + [r[0] for r in layer.ranges]
    return all(lo <= need[n][0] <= read[0] and read[1] <= need[n][1] <= hi for n in others)


def _recurrence(d: Descriptor) -> tuple[str, int] | None:
    """(node, offset) of IfDefined(Offset(node, offset)) with offset != 0, else None."""
    if isinstance(d, IfDefined) and isinstance(d.arg, Offset) and isinstance(d.arg.arg, NodeRef) \
            and d.arg.t != 0 and d.arg.x == 0:
        return d.arg.arg.name, d.arg.t
    return None


def _reads(d: Descriptor, names) -> bool:
    if isinstance(d, NodeRef):
        return d.name in names
    return any(_reads(c, names) for c in d.children())


@dataclass
class LoopRun:
    """What one computation of the loop needs besides its tensors."""
    delay: int
    grad_frames: range              # loop frame indices (0-based) that get derivatives
    trunc_scale: float
    clip: float
    zero_thresh: float
    crossings: torch.Tensor | None  # (T, N, 1) bool: rows that cross a zeroing boundary
    w_all_ng: object | None         # NaturalGradientPass of W_all / W_rp, or None (plain gradients)
    proj_ng: object | None
    store_stats: object | None      # LstmNonlinearity statistics sink, or None


def run_layer(layer: FastLstmLayer, ext, mask, W, b, peep, W_p, b_p, times, N: int, nnet: Nnet,
              grad_frames: range, ng_all, ng_proj, store_stats) -> tuple[torch.Tensor, ...]:
    """(c, m[, rp]) as (N, T, dim) for the loop frames `times` (ext: (N, T, outside dim))."""
    t_comp = nnet.components[nnet.node(layer.trunc).component]
    crossings = None
    if grad_frames and t_comp.zeroing_interval > 0 and t_comp.zeroing_threshold > 0:
        crossings = truncation_crossings(times, N, t_comp.zeroing_interval, t_comp.recurrence_interval)
        crossings = crossings.transpose(0, 1).unsqueeze(-1)     # (T, N, 1)
    run = LoopRun(layer.delay, grad_frames, float(t_comp.scale), float(t_comp.clipping_threshold),
                  float(t_comp.zeroing_threshold), crossings, ng_all, ng_proj, store_stats)
    return FastLstmLoop.apply(run, ext, W, b, peep, mask, W_p, b_p)


def readable(layer: FastLstmLayer) -> set[str]:
    """The loop members whose values `member_values` gives (all but W_all)."""
    return {layer.nonlin, layer.trunc} | ({layer.proj} if layer.proj else set()) | {r[0] for r in layer.ranges}


def member_values(layer: FastLstmLayer, outputs: tuple[torch.Tensor, ...], scale: float, names) -> dict:
    """Values (N, T, dim) of the loop members in `names` from the loop's (c, m[, rp])."""
    c, m = outputs[0], outputs[1]
    rp = outputs[2] if layer.proj else None
    C, P = layer.cell_dim, layer.rec_dim
    rec = m if rp is None else rp[..., :P]

    def scaled(v):
        return v if scale == 1.0 else scale * v

    parts = {(layer.nonlin, 0, C): lambda: c, (layer.nonlin, C, C): lambda: m,
             (layer.trunc, 0, C): lambda: scaled(c), (layer.trunc, C, P): lambda: scaled(rec),
             (layer.proj, 0, P): lambda: rec}
    whole = {layer.nonlin: lambda: torch.cat([c, m], -1), layer.trunc: lambda: scaled(torch.cat([c, rec], -1)),
             layer.proj: lambda: rp}
    by_name = {name: (src, off, dim) for name, src, off, dim in layer.ranges}
    return {n: whole[n]() if n in whole else parts[by_name[n]]() for n in names}


class FastLstmLoop(torch.autograd.Function):
    """(c, m[, rp]) of a fast LSTM loop; see the module docstring."""

    @staticmethod
    def forward(ctx, run: LoopRun, ext, W, b, peep, mask, W_p, b_p):
        N, T, D = ext.shape
        C = peep.shape[1]
        P = W.shape[1] - D
        x = ext.transpose(0, 1)                                   # (T, N, D), time-major
        pre = torch.nn.functional.linear(x, W[:, :D], b).contiguous()   # (T, N, 4C), gates in place
        W_rT = W[:, D:].t()
        scales = None if mask is None else mask.transpose(0, 1)   # (T, N, 3)
        acts = x.new_empty(T, N, 5, C)       # i, f, tanh(c_part), o, tanh(c) (Kaldi's stats rows)
        cell = x.new_empty(T, N, C)
        out_m = x.new_empty(T, N, C)
        rp = None if W_p is None else x.new_empty(T, N, W_p.shape[0])
        W_pT = None if W_p is None else W_p.t()
        s = run.trunc_scale
        steps = range(T) if run.delay < 0 else range(T - 1, -1, -1)
        for t in steps:
            g, a, c = pre[t], acts[t], cell[t]
            gv = g.view(N, 4, C)
            src = t + run.delay
            have = 0 <= src < T
            if have:
                r_prev = rp[src, :, :P] if rp is not None else out_m[src]
                c_prev = cell[src]
                if s != 1.0:
                    r_prev, c_prev = r_prev * s, c_prev * s
                g.addmm_(r_prev, W_rT)
                gv[:, :2].addcmul_(peep[:2], c_prev[:, None])
            torch.sigmoid(gv[:, :2], out=a[:, :2])
            torch.tanh(gv[:, 2], out=a[:, 2])
            i_t, f_t = a[:, 0], a[:, 1]
            if scales is not None:
                i_t, f_t = i_t * scales[t, :, 0:1], f_t * scales[t, :, 1:2]
            if have:
                torch.mul(f_t, c_prev, out=c)
                c.addcmul_(i_t, a[:, 2])
            else:
                torch.mul(i_t, a[:, 2], out=c)
            gv[:, 3].addcmul_(peep[2], c)
            torch.sigmoid(gv[:, 3], out=a[:, 3])
            torch.tanh(c, out=a[:, 4])
            o_t = a[:, 3] if scales is None else a[:, 3] * scales[t, :, 2:3]
            torch.mul(o_t, a[:, 4], out=out_m[t])
            if rp is not None:
                if b_p is None:
                    torch.mm(out_m[t], W_pT, out=rp[t])
                else:
                    torch.addmm(b_p, out_m[t], W_pT, out=rp[t])
        frames = run.grad_frames
        if run.store_stats is not None and len(frames):
            run.store_stats(acts[frames.start:frames.stop])
        ctx.run = run
        ctx.dims = (N, T, D, C, P)
        ctx.save_for_backward(x, W, peep, scales, W_p, acts, cell, out_m, rp)
        ctx.set_materialize_grads(False)
        outs = (cell.transpose(0, 1), out_m.transpose(0, 1))
        return outs + ((rp.transpose(0, 1),) if rp is not None else ())

    @staticmethod
    def backward(ctx, d_c, d_m, d_rp=None):
        run: LoopRun = ctx.run
        ctx.run = None
        N, T, D, C, P = ctx.dims
        x, W, peep, scales, W_p, acts, cell, out_m, rp = ctx.saved_tensors
        frames = run.grad_frames
        none = (None,) * 8
        if not len(frames):
            return none
        f0, f1 = frames.start, frames.stop
        Tg = f1 - f0
        s = run.trunc_scale
        # Inputs of each frame, for the frames with derivatives (zero where undefined).
        idx = torch.arange(f0, f1, device=x.device)
        src = idx + run.delay
        defined = ((src >= 0) & (src < T))[:, None, None]
        src = src.clamp(0, T - 1)
        rec_all = rp[..., :P] if rp is not None else out_m
        c_prev = torch.where(defined, cell[src] * s, 0.0)              # (Tg, N, C)
        r_prev = torch.where(defined, rec_all[src] * s, 0.0)           # (Tg, N, P)
        a = acts[f0:f1]
        i_t, f_t, tc_part, o_t, tc = a.unbind(2)
        sc = None if scales is None else scales[f0:f1]
        i_s = i_t if sc is None else i_t * sc[..., 0:1]
        f_s = f_t if sc is None else f_t * sc[..., 1:2]
        o_s = o_t if sc is None else o_t * sc[..., 2:3]
        # d(pre-activations) = d(out) * factor, per gate: the parts that need no recurrence.
        k_o = tc * (o_t - o_t * o_t)
        if sc is not None:
            k_o = k_o * sc[..., 2:3]
        k_c = o_s * (1.0 - tc * tc)
        k_if = torch.stack([tc_part * (i_t - i_t * i_t), c_prev * (f_t - f_t * f_t)], 2)
        if sc is not None:
            k_if = k_if * sc[..., :2].unsqueeze(-1)
        k_cp = i_s * (1.0 - tc_part * tc_part)
        d_gates = x.new_empty(Tg, N, 4, C)
        d_rp_all = None if W_p is None else x.new_empty(Tg, N, W_p.shape[0])
        d_c_t = None if d_c is None else d_c.transpose(0, 1)
        d_m_t = None if d_m is None else d_m.transpose(0, 1)
        d_rp_t = None if d_rp is None else d_rp.transpose(0, 1)
        # Derivative w.r.t. the truncation's output at each frame, written by the frame that reads it.
        d_trunc = x.new_empty(Tg, N, C + P)
        has_trunc = [False] * Tg
        W_r = W[:, D:]
        zeros_c = x.new_zeros(N, C)
        steps = range(f1 - 1, f0 - 1, -1) if run.delay < 0 else range(f0, f1)
        for t in steps:
            j = t - f0
            if has_trunc[j]:
                g = truncate_derivative(d_trunc[j], s, run.clip, run.zero_thresh,
                                        None if run.crossings is None else run.crossings[t])
                g_c, g_r = g[:, :C], g[:, C:]
            else:
                g_c = g_r = None
            dc = _sum(d_c_t[t] if d_c_t is not None else None, g_c)
            dc = zeros_c.clone() if dc is None else dc.clone()
            if W_p is not None:
                drp = d_rp_all[j]
                if d_rp_t is not None:
                    drp.copy_(d_rp_t[t])
                else:
                    drp.zero_()
                if g_r is not None:
                    drp[:, :P] += g_r
                dm = torch.mm(drp, W_p) if d_m_t is None else torch.addmm(d_m_t[t], drp, W_p)
            else:
                dm = _sum(d_m_t[t] if d_m_t is not None else None, g_r)
                if dm is None:
                    dm = zeros_c
            dg = d_gates[j]
            torch.mul(dm, k_o[j], out=dg[:, 3])
            dc.addcmul_(dm, k_c[j])
            dc.addcmul_(dg[:, 3], peep[2])
            torch.mul(dc[:, None], k_if[j], out=dg[:, :2])
            torch.mul(dc, k_cp[j], out=dg[:, 2])
            k = t + run.delay
            if f0 <= k < f1:            # the recurrence carries derivatives back to frame k
                dt = d_trunc[k - f0]
                dcp = dt[:, :C]
                torch.mul(dc, f_s[j], out=dcp)
                dcp.addcmul_(dg[:, 0], peep[0])
                dcp.addcmul_(dg[:, 1], peep[1])
                torch.mm(dg.view(N, 4 * C), W_r, out=dt[:, C:])
                has_trunc[k - f0] = True
        # Everything else for all frames at once.
        dG = d_gates.view(Tg, N, 4 * C)
        d_peep = torch.stack([(d_gates[:, :, 0] * c_prev).sum((0, 1)), (d_gates[:, :, 1] * c_prev).sum((0, 1)),
                              (d_gates[:, :, 3] * cell[f0:f1]).sum((0, 1))])
        d_ext = None
        if ctx.needs_input_grad[1]:
            d_ext_t = x.new_zeros(T, N, D)
            torch.matmul(dG, W[:, :D], out=d_ext_t[f0:f1])
            d_ext = d_ext_t.transpose(0, 1)
        rows_in = torch.cat([x[f0:f1], r_prev], -1).reshape(-1, D + P)
        rows_out = dG.reshape(-1, 4 * C)
        d_W, d_b = _affine_grads(rows_in, rows_out, run.w_all_ng, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        d_Wp = d_bp = None
        if W_p is not None:
            d_Wp, d_bp = _affine_grads(out_m[f0:f1].reshape(-1, C), d_rp_all.reshape(-1, W_p.shape[0]), run.proj_ng,
                                       ctx.needs_input_grad[6], ctx.needs_input_grad[7])
        return None, d_ext, d_W, d_b, d_peep, None, d_Wp, d_bp


def _sum(a, b):
    if a is None:
        return b
    return a if b is None else a + b


def _affine_grads(rows_in, rows_out, ng_pass, need_w: bool, need_b: bool):
    """The weight and bias gradients of an affine map, or (with a natural-gradient pass) its rows
    handed to the pass, which computes the update from them."""
    if ng_pass is not None:
        ng_pass.add_rows(rows_in, rows_out)
        return None, None
    return (rows_out.t() @ rows_in if need_w else None), (rows_out.sum(0) if need_b else None)
