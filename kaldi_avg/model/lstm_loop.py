"""Kaldi's fast LSTM layers (fast-lstm-layer, fast-lstmp-layer) stepped as one autograd node.

The graph executor (`graph.py`) steps any recurrent loop node by node, frame by frame, with
autograd recording every operation; for the loops that xconfig's fast LSTM layers produce that
is dozens of small tensor operations and autograd nodes per frame (benchmarks/throughput.py:
fusing the loop took the LSTMP step from 107 to 60 ms). `match` recognizes such a loop
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
written out by hand: per frame the truncation, the nonlinearity's derivatives from its saved
values and one GEMM back through the recurrence; the parameter derivatives and the derivative
w.r.t. the outside input for all frames at once. Derivatives stop at frames outside
[min_deriv_time, max_deriv_time] as in the executor; the natural-gradient rows of W_all and
W_rp ([outside input | recurrent input] and the derivative rows of the frames with
derivatives) go to the components' `NaturalGradientPass`, which then computes their update,
so the plain weight gradients are not formed. A "frame" of the loop is one frame of its grid
(graph.py, "Strides"): at stride 3 a delay -3 layer reads the previous step.
`tests/model/test_lstm_loop.py` checks values, gradients, natural-gradient updates and statistics
against the frame-by-frame executor.
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
    ranges: tuple[tuple[str, str, int, int], ...]   # dim-range members: (name, source node, offset, dim)


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
    delay: int                      # the recurrence reads step t + delay (the layer's delay / stride)
    grad_frames: range              # loop step indices (0-based) that get derivatives
    trunc_scale: float
    clip: float
    zero_thresh: float
    crossings: torch.Tensor | None  # (T, N, 1) bool: rows that cross a zeroing boundary
    w_all_ng: object | None         # NaturalGradientPass of W_all / W_rp, or None (plain gradients)
    proj_ng: object | None
    store_stats: object | None      # LstmNonlinearity's add_activation_sums, or None


def run_layer(layer: FastLstmLayer, ext, mask, W, b, peep, W_p, b_p, times, N: int, nnet: Nnet,
              grad_frames: range, ng_all, ng_proj, store_stats, stride: int = 1) -> tuple[torch.Tensor, ...]:
    """(c, m[, rp]) as (N, T, dim) for the loop frames `times` (ext: (N, T, outside dim)), which
    are `stride` frames apart: the layer's delay, a multiple of it, is delay / stride steps."""
    t_comp = nnet.components[nnet.node(layer.trunc).component]
    crossings = None
    if grad_frames and t_comp.zeroing_interval > 0 and t_comp.zeroing_threshold > 0:
        crossings = truncation_crossings(times, N, t_comp.zeroing_interval, t_comp.recurrence_interval)
        crossings = crossings.transpose(0, 1).unsqueeze(-1)     # (T, N, 1)
    run = LoopRun(layer.delay // stride, grad_frames, float(t_comp.scale), float(t_comp.clipping_threshold),
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
    """(c, m[, rp]) of a fast LSTM loop; see the module docstring. Inside, values are time-major,
    (T, N, dim); each buffer is cut into its per-frame views once (one `unbind` per buffer and
    gate), so the frame loops run only the arithmetic."""

    @staticmethod
    def forward(ctx, run: LoopRun, ext, W, b, peep, mask, W_p, b_p):
        N, T, D = ext.shape
        C = peep.shape[1]
        P = W.shape[1] - D
        x = ext.transpose(0, 1).contiguous()                       # time-major (a copy)
        pre = torch.addmm(b, x.view(T * N, D), W[:, :D].t()).view(T, N, 4 * C)   # gates, completed in place
        W_rT = W[:, D:].t()
        scales = None if mask is None else mask.transpose(0, 1)   # (T, N, 3)
        acts = x.new_empty(T, N, 5, C)       # i, f, tanh(c_part), o, tanh(c) (Kaldi's stats rows)
        cell = x.new_empty(T, N, C)
        out_m = x.new_empty(T, N, C)
        rp = None if W_p is None else x.new_empty(T, N, W_p.shape[0])
        W_pT = None if W_p is None else W_p.t()
        gates = pre.view(T, N, 4, C)
        pre_t, g_if, g_cp, g_o = pre.unbind(0), gates[:, :, :2].unbind(0), gates[:, :, 2].unbind(0), \
            gates[:, :, 3].unbind(0)
        a_if, a_i, a_f, a_cp, a_o, a_tc = (acts[:, :, :2].unbind(0),) + tuple(acts[:, :, k].unbind(0) for k in range(5))
        a_t, c_t, c_b, m_t = acts.unbind(0), cell.unbind(0), cell[:, :, None].unbind(0), out_m.unbind(0)
        rp_t = None if rp is None else rp.unbind(0)
        rec_t = m_t if rp is None else rp[:, :, :P].unbind(0)
        peep_if, peep_o = peep[:2], peep[2]
        s = run.trunc_scale
        frames = run.grad_frames
        # The statistics of the frames with derivatives, summed frame by frame while in cache.
        stats = run.store_stats is not None and len(frames) > 0
        if stats:
            value_sum, value_sqsum = x.new_zeros(N, 5, C), x.new_zeros(N, 5, C)
        for t in (range(T) if run.delay < 0 else range(T - 1, -1, -1)):
            src = t + run.delay
            have = 0 <= src < T
            if have:
                r_prev, c_prev, c_prev_b = rec_t[src], c_t[src], c_b[src]
                if s != 1.0:
                    r_prev, c_prev, c_prev_b = r_prev * s, c_prev * s, c_prev_b * s
                pre_t[t].addmm_(r_prev, W_rT)
                g_if[t].addcmul_(peep_if, c_prev_b)
            torch.sigmoid(g_if[t], out=a_if[t])
            torch.tanh(g_cp[t], out=a_cp[t])
            i_t, f_t = a_i[t], a_f[t]
            if scales is not None:
                i_t, f_t = i_t * scales[t, :, 0:1], f_t * scales[t, :, 1:2]
            if have:
                torch.mul(f_t, c_prev, out=c_t[t])
                c_t[t].addcmul_(i_t, a_cp[t])
            else:
                torch.mul(i_t, a_cp[t], out=c_t[t])
            g_o[t].addcmul_(peep_o, c_t[t])
            torch.sigmoid(g_o[t], out=a_o[t])
            torch.tanh(c_t[t], out=a_tc[t])
            o_t = a_o[t] if scales is None else a_o[t] * scales[t, :, 2:3]
            torch.mul(o_t, a_tc[t], out=m_t[t])
            if rp_t is not None:
                if b_p is None:
                    torch.mm(m_t[t], W_pT, out=rp_t[t])
                else:
                    torch.addmm(b_p, m_t[t], W_pT, out=rp_t[t])
            if stats and t in frames:
                value_sum.add_(a_t[t])
                value_sqsum.addcmul_(a_t[t], a_t[t])
        if stats:
            run.store_stats(value_sum.sum(0), value_sqsum.sum(0), N * len(frames))
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
        if not len(frames):
            return (None,) * 8
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
        a_if, a_i, a_f, a_cp, a_o, a_tc = (a[:, :, :2].unbind(0),) + tuple(a[:, :, k].unbind(0) for k in range(5))
        sc = None if scales is None else scales[f0:f1].unbind(0)
        d_gates = x.new_empty(Tg, N, 4, C)
        d_rp_all = None if W_p is None else x.new_empty(Tg, N, W_p.shape[0])
        d_c_t = None if d_c is None else d_c.transpose(0, 1)[f0:f1].unbind(0)
        d_m_t = None if d_m is None else d_m.transpose(0, 1)[f0:f1].unbind(0)
        d_rp_t = None if d_rp is None else d_rp.transpose(0, 1)[f0:f1].unbind(0)
        # The derivative w.r.t. the truncation's output at a frame, written by the frame reading it.
        d_trunc = x.new_empty(Tg, N, C + P)
        dt_t, dt_c, dt_r = d_trunc.unbind(0), d_trunc[:, :, :C].unbind(0), d_trunc[:, :, C:].unbind(0)
        has_trunc = [False] * Tg
        dg_t, dg_if, dg_i, dg_f, dg_cp, dg_o = (d_gates.view(Tg, N, 4 * C).unbind(0), d_gates[:, :, :2].unbind(0)) + \
            tuple(d_gates[:, :, k].unbind(0) for k in range(4))
        drp_t = None if d_rp_all is None else d_rp_all.unbind(0)
        crossings = run.crossings
        W_r = W[:, D:]
        peep_i, peep_f, peep_o = peep.unbind(0)
        zeros_c = x.new_zeros(N, C)
        c_prev_t, cell_t = c_prev.unbind(0), cell.unbind(0)
        d_peep_rows = x.new_zeros(3, N, C)       # the peepholes' derivative, summed over frames
        dp_i, dp_f, dp_o = d_peep_rows.unbind(0)
        for t in (range(f1 - 1, f0 - 1, -1) if run.delay < 0 else range(f0, f1)):
            j = t - f0
            g_c = g_r = None
            if has_trunc[j]:
                g = truncate_derivative(dt_t[j], s, run.clip, run.zero_thresh,
                                        None if crossings is None else crossings[t])
                g_c, g_r = g[:, :C], g[:, C:]
            # dc is updated in place: a fresh tensor, never the incoming derivative itself
            if d_c_t is None:
                dc = g_c if g_c is not None else zeros_c.clone()
            else:
                dc = d_c_t[j] + g_c if g_c is not None else d_c_t[j].clone()
            if drp_t is not None:
                drp = drp_t[j]
                if d_rp_t is not None:
                    drp.copy_(d_rp_t[j])
                else:
                    drp.zero_()
                if g_r is not None:
                    drp[:, :P] += g_r
                dm = torch.mm(drp, W_p) if d_m_t is None else torch.addmm(d_m_t[j], drp, W_p)
            elif d_m_t is None:
                dm = g_r if g_r is not None else zeros_c
            else:
                dm = d_m_t[j] + g_r if g_r is not None else d_m_t[j]
            # The nonlinearity's derivatives from its saved values, frame by frame while in cache.
            i_t, f_t, o_t, tc = a_i[j], a_f[j], a_o[j], a_tc[j]
            if sc is not None:    # dropout scales: m = o o_s tanh(c), c = f f_s c_prev + i i_s tanh(c_part)
                dm = dm * sc[j][:, 2:3]
            torch.mul(dm, tc, out=dg_o[j])
            dg_o[j].mul_(torch.addcmul(o_t, o_t, o_t, value=-1.0))                 # d o_part
            dc.addcmul_(dm, torch.addcmul(o_t, o_t, tc * tc, value=-1.0))          # o (1 - tanh(c)^2)
            dc.addcmul_(dg_o[j], peep_o)
            dc_i, dc_f = (dc, dc) if sc is None else (dc * sc[j][:, 0:1], dc * sc[j][:, 1:2])
            torch.mul(dc_i, torch.addcmul(i_t, i_t, a_cp[j] * a_cp[j], value=-1.0), out=dg_cp[j])
            torch.mul(torch.stack([dc_i, dc_f], 1) if sc is not None else dc[:, None],
                      torch.addcmul(a_if[j], a_if[j], a_if[j], value=-1.0), out=dg_if[j])   # i - i^2, f - f^2
            dg_i[j].mul_(a_cp[j])
            dg_f[j].mul_(c_prev_t[j])
            dp_i.addcmul_(dg_i[j], c_prev_t[j])
            dp_f.addcmul_(dg_f[j], c_prev_t[j])
            dp_o.addcmul_(dg_o[j], cell_t[t])
            k = t + run.delay - f0
            if 0 <= k < Tg:            # the recurrence carries derivatives back to frame k
                dcp = dt_c[k]
                torch.mul(dc_f, f_t, out=dcp)
                dcp.addcmul_(dg_i[j], peep_i)
                dcp.addcmul_(dg_f[j], peep_f)
                torch.mm(dg_t[j], W_r, out=dt_r[k])
                has_trunc[k] = True
        # Everything else for all frames at once.
        dG = d_gates.view(Tg, N, 4 * C)
        d_peep = d_peep_rows.sum(1)
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


def _affine_grads(rows_in, rows_out, ng_pass, need_w: bool, need_b: bool):
    """The weight and bias gradients of an affine map, or (with a natural-gradient pass) its rows
    handed to the pass, which computes the update from them."""
    if ng_pass is not None:
        ng_pass.add_rows(rows_in, rows_out)
        return None, None
    return (rows_out.t() @ rows_in if need_w else None), (rows_out.sum(0) if need_b else None)
