"""nnet3 component math in PyTorch, exactly as Kaldi computes it (kaldi-interface.md section 4).

`ComponentOp` wraps one nnet3 component: it owns the component's tensors (trainable ones as
`nn.Parameter`, fixed ones as buffers) and applies the component to rows of shape (..., in_dim).
Training-only behaviour that Kaldi has (BackpropTruncation's gradient clipping and zeroing,
BatchNorm statistics, non-inverted dropout) is reproduced; decoders' test mode is the default
outside `train()`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..kaldi.nnet3.components import Component
from ..kaldi.nnet3.config import ConfigError

# Trainable arrays, per component type; everything else a component needs is a fixed buffer.
AFFINE_TYPES = ("NaturalGradientAffineComponent", "AffineComponent", "FixedAffineComponent")
NONLINEAR = {
    "SigmoidComponent": torch.sigmoid,
    "TanhComponent": torch.tanh,
    "RectifiedLinearComponent": torch.relu,
    "LogSoftmaxComponent": lambda x: torch.log_softmax(x, dim=-1),
    "SoftmaxComponent": lambda x: torch.clamp(torch.softmax(x, dim=-1), min=1e-20),
    "NoOpComponent": lambda x: x,
    "ClipGradientComponent": lambda x: x,
}
SUPPORTED_TYPES = frozenset(AFFINE_TYPES) | NONLINEAR.keys() | {
    "LinearComponent", "LstmNonlinearityComponent", "BackpropTruncationComponent", "ElementwiseProductComponent",
    "NaturalGradientPerElementScaleComponent", "PerElementScaleComponent", "FixedScaleComponent",
    "FixedBiasComponent", "ScaleAndOffsetComponent", "NormalizeComponent", "BatchNormComponent",
    "DropoutComponent"}


class ComponentOp(nn.Module):
    def __init__(self, component: Component):
        super().__init__()
        self.component = component
        self.type_name = component.type_name
        if self.type_name not in SUPPORTED_TYPES:
            raise ConfigError(f"component type {self.type_name} has no PyTorch implementation in kaldi-avg "
                              f"(supported: {', '.join(sorted(SUPPORTED_TYPES))})")
        trainable = component.params()
        for name, arr in _tensors_of(component).items():
            t = torch.from_numpy(np.array(arr, dtype=np.float32))
            if name in trainable:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        # BatchNorm accumulates statistics while training, as Kaldi's StoreStats does.
        if self.type_name == "BatchNormComponent":
            self.register_buffer("stats_count", torch.zeros((), dtype=torch.float64))
            self.register_buffer("stats_sum", torch.zeros(component.block_dim, dtype=torch.float64))
            self.register_buffer("stats_sumsq", torch.zeros(component.block_dim, dtype=torch.float64))

    def write_back(self) -> None:
        """Copies trained values into the nnet3 component (for export)."""
        for name, arr in self.component.params().items():
            arr[...] = getattr(self, name).detach().cpu().numpy().reshape(arr.shape)
        if self.type_name == "BatchNormComponent" and float(self.stats_count) > 0:
            count = float(self.stats_count)
            mean = (self.stats_sum / count).cpu().numpy()
            var = (self.stats_sumsq / count).cpu().numpy() - mean * mean
            self.component.set_stats(count, mean, np.maximum(var, 0.0))

    # -- the math ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
        """`x`: (..., input_dim). `times`: frame index of each row's time axis, needed only by
        BackpropTruncation's zeroing in training (shape broadcastable to x[..., 0])."""
        t = self.type_name
        if t in AFFINE_TYPES:
            return torch.nn.functional.linear(x, self.linear_params, self.bias_params)
        if t == "LinearComponent":
            return torch.nn.functional.linear(x, self.linear_params)
        if t in NONLINEAR:
            return NONLINEAR[t](x)
        if t == "LstmNonlinearityComponent":
            return lstm_nonlinearity(x, self.peepholes)
        if t == "BackpropTruncationComponent":
            c = self.component
            if self.training and torch.is_grad_enabled():
                return _BackpropTruncation.apply(x, times, c.scale, c.clipping_threshold,
                                                 c.zeroing_threshold, c.zeroing_interval, c.recurrence_interval)
            return x * c.scale
        if t == "ElementwiseProductComponent":
            c = self.component
            k = c.input_dim() // c.output_dim()
            out = x[..., :c.output_dim()]
            for i in range(1, k):
                out = out * x[..., i * c.output_dim():(i + 1) * c.output_dim()]
            return out
        if t in ("NaturalGradientPerElementScaleComponent", "PerElementScaleComponent"):
            return x * self.scales
        if t == "FixedScaleComponent":
            return x * self.scales
        if t == "FixedBiasComponent":
            return x + self.bias
        if t == "ScaleAndOffsetComponent":
            return _blocks(x, self.scales.numel(), lambda b: b * _ensure_nonzero(self.scales) + self.offsets)
        if t == "NormalizeComponent":
            return normalize_rows(x, self.component)
        if t == "BatchNormComponent":
            return self._batchnorm(x)
        p = self.component.dropout_proportion  # DropoutComponent: the last supported type
        if self.training and p > 0:
            # Kaldi's dropout is not inverted: kept values are not rescaled.
            return x * (torch.rand_like(x) >= p).to(x.dtype)
        return x * (1.0 - p)

    def _batchnorm(self, x: torch.Tensor) -> torch.Tensor:
        c = self.component
        bd = c.block_dim
        rows = x.reshape(-1, bd)
        if self.training:
            mean = rows.mean(0)
            var = rows.var(0, unbiased=False)
            with torch.no_grad():
                self.stats_count += rows.shape[0]
                self.stats_sum += rows.sum(0).double()
                self.stats_sumsq += (rows.double() ** 2).sum(0)
        else:
            mean, var = self.stats_mean, self.stats_var
        scale = c.target_rms * torch.rsqrt(var + c.epsilon)
        return ((rows - mean) * scale).reshape(x.shape)


def _tensors_of(c: Component) -> dict[str, np.ndarray]:
    t = c.type_name
    if t in AFFINE_TYPES:
        return {"linear_params": c.linear_params, "bias_params": c.bias_params}
    if t == "LinearComponent":
        return {"linear_params": c.linear_params}
    if t == "LstmNonlinearityComponent":
        return {"peepholes": c.peepholes}
    if t in ("NaturalGradientPerElementScaleComponent", "PerElementScaleComponent", "FixedScaleComponent"):
        return {"scales": c.scales}
    if t == "FixedBiasComponent":
        return {"bias": c.bias}
    if t == "ScaleAndOffsetComponent":
        return {"scales": c.scales, "offsets": c.offsets}
    if t == "BatchNormComponent":
        return {"stats_mean": c.stats_mean, "stats_var": c.stats_var}
    return {}


def lstm_nonlinearity(x: torch.Tensor, peep: torch.Tensor) -> torch.Tensor:
    """LstmNonlinearityComponent (4.7): input [i, f, c, o, c_prev (, 3 dropout scales)] -> [c_t, m_t]."""
    C = peep.shape[1]
    i_part, f_part, c_part, o_part, c_prev = (x[..., k * C:(k + 1) * C] for k in range(5))
    if x.shape[-1] == 5 * C + 3:
        i_scale, f_scale, o_scale = (x[..., 5 * C + k:5 * C + k + 1] for k in range(3))
    else:
        i_scale = f_scale = o_scale = 1.0
    i_t = torch.sigmoid(i_part + peep[0] * c_prev)
    f_t = torch.sigmoid(f_part + peep[1] * c_prev)
    c_t = f_t * f_scale * c_prev + i_t * i_scale * torch.tanh(c_part)
    o_t = torch.sigmoid(o_part + peep[2] * c_t)  # the output gate peeps at the new cell
    m_t = o_t * o_scale * torch.tanh(c_t)
    return torch.cat([c_t, m_t], dim=-1)


def normalize_rows(x: torch.Tensor, c: Component) -> torch.Tensor:
    """NormalizeComponent (4.9)."""
    bd = c.block_dim
    blocks = x.reshape(*x.shape[:-1], -1, bd)
    p = (blocks * blocks).sum(-1, keepdim=True) / (bd * c.target_rms ** 2)
    f = torch.rsqrt(torch.clamp(p, min=2.0 ** -66))
    y = (blocks * f).reshape(x.shape)
    if c.add_log_stddev:
        log_stddev = math.log(c.target_rms) - torch.log(f.squeeze(-1))
        y = torch.cat([y, log_stddev], dim=-1)
    return y


def _ensure_nonzero(s: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    small = s.abs() < eps
    return torch.where(small, torch.where(s < 0, -eps, eps) * torch.ones_like(s), s)


def _blocks(x: torch.Tensor, block: int, fn) -> torch.Tensor:
    return fn(x.reshape(*x.shape[:-1], -1, block)).reshape(x.shape)


class _BackpropTruncation(torch.autograd.Function):
    """Forward y = scale x. Backward as Kaldi: scale, clip each row's norm to the clipping
    threshold, and zero rows that cross a zeroing boundary with a large derivative (4.8)."""

    @staticmethod
    def forward(ctx, x, times, scale, clip, zero_thresh, zero_interval, rec_interval):
        ctx.save_for_backward(times if times is not None else torch.empty(0))
        ctx.args = (scale, clip, zero_thresh, zero_interval, rec_interval, times is not None)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        (times,) = ctx.saved_tensors
        scale, clip, zero_thresh, zero_interval, rec_interval, have_times = ctx.args
        g = g * scale
        norm = g.norm(dim=-1, keepdim=True)
        if have_times and zero_interval > 0 and zero_thresh > 0:
            # Row (n, t) crosses a boundary when floor((t-n)/I) != floor((t-R-n)/I). `times` is the
            # time axis of g: (T,) for (N, T, dim) values, (1,) for one frame (N, dim).
            n = torch.arange(g.shape[0], device=g.device)
            t = times.to(g.device)
            if g.dim() == 3:
                n, t = n[:, None], t[None, :]
            crosses = (torch.div(t - n, zero_interval, rounding_mode="floor")
                       != torch.div(t - rec_interval - n, zero_interval, rounding_mode="floor"))
            zero = crosses.unsqueeze(-1) & (norm > zero_thresh)
        else:
            zero = None
        if clip > 0:
            g = g * torch.clamp(clip / torch.clamp(norm, min=1e-30), max=1.0)
        if zero is not None:
            g = torch.where(zero, torch.zeros_like(g), g)
        return g, None, None, None, None, None, None
