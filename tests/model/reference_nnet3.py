"""A deliberately naive nnet3 evaluator used as a test oracle for the PyTorch executor.

It evaluates node values one (node, frame) at a time with memoization, straight from the
definitions in docs/kaldi-formats.md 3.5 and 4 (computability, IfDefined, the component
equations), sharing no code with `kaldi_avg.model`. One sequence, one chunk.

It knows nothing of recurrence directions: it sweeps the frames of the chunk forward and
backward in turn, computing every (node, frame) whose inputs are known, until all are (a
forward LSTM resolves in a forward sweep, a backward one in a backward sweep). Frames outside
the chunk are computed on demand; they are undefined wherever they need the input.
"""
from __future__ import annotations

import numpy as np

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.descriptor import (
    Append,
    Const,
    IfDefined,
    NodeRef,
    Offset,
    ReplaceIndex,
    Round,
    Scale,
    Sum,
    descriptor_dim,
)
from kaldi_avg.kaldi.nnet3.nnet import ComponentNode, DimRangeNode, InputNode, Nnet


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _component(c, x: np.ndarray) -> np.ndarray:
    t = c.type_name
    x = x.astype(np.float64)
    if t in ("NaturalGradientAffineComponent", "AffineComponent", "FixedAffineComponent"):
        return c.linear_params.astype(np.float64) @ x + c.bias_params
    if t == "LinearComponent":
        return c.linear_params.astype(np.float64) @ x
    if t == "LstmNonlinearityComponent":
        C = c.peepholes.shape[1]
        i, f, g, o, cp = (x[k * C:(k + 1) * C] for k in range(5))
        si, sf, so = x[5 * C:] if c.use_dropout else (1.0, 1.0, 1.0)   # the gates' dropout scales
        w = c.peepholes.astype(np.float64)
        it = _sigmoid(i + w[0] * cp)
        ft = _sigmoid(f + w[1] * cp)
        ct = ft * sf * cp + it * si * np.tanh(g)
        ot = _sigmoid(o + w[2] * ct)
        return np.concatenate([ct, ot * so * np.tanh(ct)])
    if t == "GruNonlinearityComponent":     # [z, r, hpart, c_prev, s_prev] (s_prev = c_prev if R = C)
        C, R = c.cell_dim, c.recurrent_dim
        z, r, hpart, cp = x[:C], x[C:C + R], x[C + R:2 * C + R], x[2 * C + R:3 * C + R]
        sp = x[-R:]
        h = np.tanh(hpart + c.w_h.astype(np.float64) @ (r * sp))
        return np.concatenate([h, (1 - z) * h + z * cp])
    if t == "OutputGruNonlinearityComponent":   # [z, hpart, c_prev], w_h elementwise
        C = c.cell_dim
        z, hpart, cp = x[:C], x[C:2 * C], x[2 * C:]
        h = np.tanh(hpart + c.w_h * cp)
        return np.concatenate([h, (1 - z) * h + z * cp])
    if t == "BackpropTruncationComponent":
        return c.scale * x
    if t == "SigmoidComponent":
        return _sigmoid(x)
    if t == "TanhComponent":
        return np.tanh(x)
    if t == "RectifiedLinearComponent":
        return np.maximum(x, 0)
    if t == "LogSoftmaxComponent":
        m = x.max()
        return x - m - np.log(np.exp(x - m).sum())
    if t == "NoOpComponent":
        return x
    if t == "ElementwiseProductComponent":
        d = c.output_dim()
        return np.prod(x.reshape(-1, d), axis=0)
    if t in ("NaturalGradientPerElementScaleComponent", "PerElementScaleComponent"):
        return x * c.scales
    if t == "BatchNormComponent":
        bd = c.block_dim
        xb = x.reshape(-1, bd)
        return ((xb - c.stats_mean) / np.sqrt(c.stats_var + c.epsilon) * c.target_rms).reshape(-1)
    if t == "NormalizeComponent":           # per block: x / max(2^-66, rms(x)^2 / target_rms^2)^0.5
        xb = x.reshape(-1, c.block_dim)
        p = (xb * xb).sum(1, keepdims=True) / (c.block_dim * c.target_rms ** 2)
        f = 1.0 / np.sqrt(np.maximum(p, 2.0 ** -66))
        y = (xb * f).reshape(-1)
        return np.concatenate([y, np.log(c.target_rms) - np.log(f[:, 0])]) if c.add_log_stddev else y
    if t == "ScaleAndOffsetComponent":
        s = c.scales.astype(np.float64)
        s = np.where(np.abs(s) < 1e-4, np.where(s < 0, -1e-4, 1e-4), s)   # Kaldi's EnsureNonzero
        return (x.reshape(-1, s.size) * s + c.offsets).reshape(-1)
    if t == "DropoutComponent":            # test mode: the expected value of a 0/1 mask
        return (1.0 - c.dropout_proportion) * x
    if t == "GeneralDropoutComponent":     # test mode: identity (its masks have mean 1)
        return x
    if t == "SpecAugmentTimeMaskComponent":  # test mode: identity
        return x
    if t == "SumBlockComponent":           # scale * sum of the blocks of output-dim
        return c.scale * x.reshape(-1, c.out_dim).sum(0)
    if t == "PermuteComponent":            # y_i = x_{column_map[i]}
        return np.array([x[j] for j in c.column_map])
    raise KeyError(t)


def _tdnn(c, spliced: list[np.ndarray]) -> np.ndarray:
    """TdnnComponent: y(t) = sum_i W_i x(t + offset_i) + b, W_i the i-th column block of W."""
    W = c.linear_params.astype(np.float64)
    d = W.shape[1] // len(spliced)
    y = sum(W[:, i * d:(i + 1) * d] @ x for i, x in enumerate(spliced))
    return y + c.bias_params if c.bias_params.size else y


def _convolution(c, images: dict) -> np.ndarray:
    """TimeHeightConvolutionComponent, pixel by pixel: output height h sums W_i x(t + dt_i) at input
    height h * subsample + dh_i over the (dt_i, dh_i) offsets, skipping heights outside the image
    and optional frames that do not exist (None); filter index fastest."""
    W = c.linear_params.astype(np.float64)
    fi, fo = c.num_filters_in, c.num_filters_out
    y = np.zeros(c.height_out * fo)
    for h in range(c.height_out):
        pixel = c.bias_params.astype(np.float64).copy()
        for i, (dt, dh) in enumerate(c.offsets):
            h_in = h * c.height_subsample_out + dh
            if 0 <= h_in < c.height_in and images[dt] is not None:
                pixel += W[:, i * fi:(i + 1) * fi] @ images[dt][h_in * fi:(h_in + 1) * fi]
        y[h * fo:(h + 1) * fo] = pixel
    return y


def _attention(c, window: list) -> np.ndarray:
    """RestrictedAttentionComponent, head by head, from the rows of its window frames (None for
    a missing optional frame: a row of zeros). Per head a row is [key, value, query]; the query of
    the middle frame is [r, s]: weights w = softmax_o(key-scale (r . key_o) + s_o), output
    sum_o w_o value_o, followed by w with output-context."""
    K, V = c.key_dim, c.value_dim
    width = 2 * K + V + len(window)
    rows = [np.zeros(width * c.num_heads) if v is None else v for v in window]
    out = []
    for h in range(c.num_heads):
        head = [row[h * width:(h + 1) * width] for row in rows]
        query = head[c.num_left_inputs][K + V:]
        scores = np.array([c.key_scale * np.dot(query[:K], head[o][:K]) + query[K + o]
                           for o in range(len(window))])
        w = np.exp(scores - scores.max())
        w /= w.sum()
        u = sum(w[o] * head[o][K:K + V] for o in range(len(window)))
        out.append(np.concatenate([u, w]) if c.output_context else u)
    return np.concatenate(out)


def _extraction(c, xs: list[np.ndarray]) -> np.ndarray:
    """StatisticsExtractionComponent from the inputs of one block that exist: [count, sum x (, sum x^2)]."""
    parts = [[float(len(xs))], sum(xs)] + ([sum(x * x for x in xs)] if c.include_variance else [])
    return np.concatenate(parts)


def _pooling(c, stats: list[np.ndarray]) -> np.ndarray:
    """StatisticsPoolingComponent from the extraction outputs of one window that exist:
    [log count repeated, mean (, sqrt(max(mean of x^2 - mean^2, floor)))]."""
    total = sum(stats)
    count, means = total[0], total[1:] / total[0]
    out = [np.full(c.num_log_count_features, np.log(count))]
    if not c.output_stddevs:
        return np.concatenate(out + [means])
    d = means.size // 2
    return np.concatenate(out + [means[:d], np.sqrt(np.maximum(means[d:] - means[:d] ** 2, c.variance_floor))])


def _test_mode_mask(c) -> np.ndarray:
    """DropoutMaskComponent in test mode (decoders): 1 - p, or 1 when p = 0 or continuous."""
    p = 0.0 if c.continuous else c.dropout_proportion
    return np.full(c.dim, 1.0 - p)


class _NotYet(Exception):
    """A (node, frame) of the chunk that no sweep has computed yet."""


class ReferenceNnet3:
    def __init__(self, nnet: Nnet, feats: np.ndarray, first_frame: int, ivector=None):
        self.nnet, self.feats, self.first, self.ivector = nnet, feats, first_frame, ivector
        self.memo: dict[tuple[str, int], np.ndarray | None] = {}

    def _in_chunk(self, t: int) -> bool:
        return self.first <= t < self.first + len(self.feats)

    def value(self, name: str, t: int):
        key = (name, t)
        if key not in self.memo:
            if self._in_chunk(t) and not isinstance(self.nnet.node(name), InputNode):
                raise _NotYet(key)
            self.memo[key] = self._compute(name, t)
        return self.memo[key]

    def _compute(self, name, t):
        node = self.nnet.node(name)
        if isinstance(node, InputNode):
            if name == "ivector":
                return None if self.ivector is None or t != 0 else self.ivector.astype(np.float64)
            i = t - self.first
            return self.feats[i].astype(np.float64) if 0 <= i < len(self.feats) else None
        if isinstance(node, DimRangeNode):
            v = self.value(node.input_node, t)
            return None if v is None else v[node.dim_offset:node.dim_offset + node.dim]
        if isinstance(node, ComponentNode) and self.nnet.components[node.component].type_name == "DropoutMaskComponent":
            return _test_mode_mask(self.nnet.components[node.component])   # takes no input
        comp = self.nnet.components[node.component] if isinstance(node, ComponentNode) else None
        if comp is not None and comp.type_name == "TimeHeightConvolutionComponent":
            # Undefined if a required time offset's frame is; the others read zeros there.
            images = {dt: self.desc(node.input, t + dt) for dt in {dt for dt, _ in comp.offsets}}
            if any(images[dt] is None for dt in comp.required_time_offsets):
                return None
            return _convolution(comp, images)
        if comp is not None and comp.type_name == "RestrictedAttentionComponent":
            # Frames t + (o - L) * stride, o = 0..L+R; undefined if one of the required ones
            # (o - L in [-L_required, R_required]) is.
            L, R = comp.num_left_inputs, comp.num_right_inputs
            window = [self.desc(node.input, t + (o - L) * comp.time_stride) for o in range(L + R + 1)]
            required = range(L - comp.num_left_inputs_required, L + comp.num_right_inputs_required + 1)
            if any(window[o] is None for o in required):
                return None
            return _attention(comp, window)
        if comp is not None and comp.type_name == "StatisticsExtractionComponent":
            # The input at multiples of input-period in t's block of output-period frames;
            # undefined if none of them is defined.
            start = t - t % comp.output_period
            xs = [self.desc(node.input, u) for u in range(start, start + comp.output_period, comp.input_period)]
            xs = [x for x in xs if x is not None]
            return _extraction(comp, xs) if xs else None
        if comp is not None and comp.type_name == "StatisticsPoolingComponent":
            # Defined only at multiples of input-period, and where one of the window's inputs is.
            if t % comp.input_period:
                return None
            window = range(t - comp.left_context, t + comp.right_context + 1, comp.input_period)
            stats = [v for v in (self.desc(node.input, u) for u in window) if v is not None]
            return _pooling(comp, stats) if stats else None
        if comp is not None and comp.type_name == "TdnnComponent":
            # It reads its input at each of its time offsets; undefined if any is.
            spliced = [self.desc(node.input, t + o) for o in comp.time_offsets]
            return None if any(v is None for v in spliced) else _tdnn(comp, spliced)
        x = self.desc(node.input, t)
        if x is None or comp is None:
            return x
        return _component(comp, x)

    def desc(self, d, t):
        if isinstance(d, NodeRef):
            return self.value(d.name, t)
        if isinstance(d, Offset):
            return self.desc(d.arg, t + d.t)
        if isinstance(d, (Append, Sum)):
            # Strict parts first: a frame that does not exist must not chase its recurrence backwards.
            args = d.children()
            vals = {}
            for i in sorted(range(len(args)), key=lambda i: isinstance(args[i], IfDefined)):
                vals[i] = self.desc(args[i], t)
                if vals[i] is None:
                    return None
            parts = [vals[i] for i in range(len(args))]
            return np.concatenate(parts) if isinstance(d, Append) else parts[0] + parts[1]
        if isinstance(d, Scale):
            v = self.desc(d.arg, t)
            return None if v is None else d.scale * v
        if isinstance(d, Const):
            return np.full(d.dim, d.value)
        if isinstance(d, ReplaceIndex):
            return self.desc(d.arg, d.value)
        if isinstance(d, Round):
            return self.desc(d.arg, t - t % d.modulus)
        if isinstance(d, IfDefined):
            v = self.desc(d.arg, t)
            if v is None:
                return np.zeros(descriptor_dim(d.arg, self.nnet.node_dim))
            return v
        raise TypeError(d)

    def _sweep(self, frames) -> bool:
        """Computes what can be computed, frame by frame in the given order; whether anything was."""
        progress = False
        for t in frames:
            grew = True
            while grew:   # nodes of one frame, in whatever order they are listed
                grew = False
                for node in self.nnet.nodes:
                    key = (node.name, t)
                    if key in self.memo:
                        continue
                    try:
                        self.memo[key] = self._compute(node.name, t)
                    except _NotYet:
                        continue
                    grew = progress = True
        return progress

    def _compute_chunk(self) -> None:
        frames = list(range(self.first, self.first + len(self.feats)))
        keys = [(node.name, t) for t in frames for node in self.nnet.nodes]
        forward = True
        while not all(k in self.memo for k in keys):
            if not self._sweep(frames if forward else frames[::-1]):
                raise RuntimeError("no (node, frame) became computable: a cycle without IfDefined?")
            forward = not forward

    def outputs(self, frames, output: str = "output") -> np.ndarray:
        self._compute_chunk()
        rows = []
        for t in frames:
            v = self.value(output, t)
            if v is None:
                raise ValueError(f"{output} not computable at frame {t}")
            rows.append(v)
        return np.stack(rows)


def reference_context(nnet: Nnet, window: int = 40) -> tuple[int, int]:
    """Kaldi's ComputeSimpleNnetContext (docs/kaldi-formats.md 3.6) over the naive evaluator: for
    each shift s = 0..modulus, input on frames s..s+window-1, the output frames of that window
    that come out defined give left = frames before the first, right = frames after the first
    run; the maxima over the shifts. (The window must exceed the context.)"""
    contexts = []
    for s in range(nnet.modulus() + 1):
        ref = ReferenceNnet3(nnet, np.zeros((window, nnet.input_dim())), s)
        ref._compute_chunk()
        ok = [ref.value("output", t) is not None for t in range(s, s + window)]
        first = ok.index(True)
        first_not_ok = ok.index(False, first) if False in ok[first:] else window
        contexts.append((first, window - first_not_ok))
    return max(c[0] for c in contexts), max(c[1] for c in contexts)


def reference_chunked(nnet: Nnet, feats: np.ndarray, opts, ivector=None) -> np.ndarray:
    """nnet3-compute's chunking (docs/kaldi-formats.md 3.5, Kaldi's
    src/nnet3/nnet-am-decodable-simple.cc `EnsureFrameIsComputed`) over the naive evaluator:
    each chunk of `opts.frames_per_chunk` output frames is computed on its own from input frames
    first - (model left + extra left) .. last + (model right + extra right), the first chunk's
    extra left replaced by `extra_left_context_initial` and the last's extra right by
    `extra_right_context_final` where >= 0, frames outside the utterance repeating its ends."""
    left, right = model_context(nnet)
    T, rows = len(feats), []
    for s in range(0, T, opts.frames_per_chunk):
        n = min(opts.frames_per_chunk, T - s)
        extra_left = opts.extra_left_context_initial if s == 0 and opts.extra_left_context_initial >= 0 \
            else opts.extra_left_context
        extra_right = opts.extra_right_context_final if s + n == T and opts.extra_right_context_final >= 0 \
            else opts.extra_right_context
        lo, hi = s - left - extra_left, s + n - 1 + right + extra_right
        idx = np.clip(np.arange(lo, hi + 1), 0, T - 1)
        rows.append(ReferenceNnet3(nnet, feats[idx], lo, ivector).outputs(range(s, s + n)))
    return np.concatenate(rows)
