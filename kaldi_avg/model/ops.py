"""nnet3 component math in PyTorch, exactly as Kaldi computes it (docs/kaldi-formats.md section 4).

`ComponentOp` wraps one nnet3 component: it owns the component's tensors (trainable ones as
`nn.Parameter`, fixed ones as buffers) and applies the component to rows of shape (..., in_dim).
What it does for a component type is that type's `register_op` below (`op_registry.py`): the
forward function, the tensors, natural gradient and statistics, declared together.
Training-only behaviour that Kaldi has (BackpropTruncation's gradient clipping and zeroing,
BatchNorm statistics, the value/derivative statistics of sigmoid and tanh units that drive
shrinkage, non-inverted dropout and the LSTM's per-frame dropout masks) is reproduced; decoders'
test mode is the default outside `train()` (and inside it for a dropout component whose
<TestMode> is set, as in Kaldi). Random masks come from torch's global generator, which the
trainer seeds per job.

Natural gradient (Kaldi's NG-SGD, `natural_gradient.py`): in training, the components that use
it in Kaldi (NaturalGradientAffineComponent; LinearComponent with use-natural-gradient;
NaturalGradientPerElementScaleComponent; the peepholes of LstmNonlinearityComponent) produce as
their parameters' gradient the preconditioned update direction of Kaldi's Update/Backprop
(times its scales), computed once per forward/backward computation from all the rows the
component saw, so the optimizer applies it like a plain gradient. Outputs and input derivatives
are unchanged. Components with <IsGradient> true, and every component after
`ComponentOp.use_natural_gradient = False`, give the plain gradient (Kaldi's UpdateSimple).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..kaldi.nnet3.components import (
    AffineComponent,
    BackpropTruncationComponent,
    BatchNormComponent,
    ClipGradientComponent,
    Component,
    DropoutComponent,
    DropoutMaskComponent,
    ElementwiseProductComponent,
    FixedAffineComponent,
    FixedBiasComponent,
    FixedScaleComponent,
    GeneralDropoutComponent,
    GruNonlinearityComponent,
    LinearComponent,
    LogSoftmaxComponent,
    LstmNonlinearityComponent,
    NaturalGradientAffineComponent,
    NaturalGradientPerElementScaleComponent,
    NoOpComponent,
    NormalizeComponent,
    OutputGruNonlinearityComponent,
    PerElementScaleComponent,
    PermuteComponent,
    RectifiedLinearComponent,
    RestrictedAttentionComponent,
    ScaleAndOffsetComponent,
    SigmoidComponent,
    SoftmaxComponent,
    SpecAugmentTimeMaskComponent,
    StatisticsExtractionComponent,
    StatisticsPoolingComponent,
    SumBlockComponent,
    TanhComponent,
    TdnnComponent,
    TimeHeightConvolutionComponent,
)
from ..kaldi.nnet3.config import NetworkConfigError
from .attention_ops import restricted_attention
from .conv_ops import ConvolutionGeometry, sum_blocks, time_height_convolution
from .frontend_ops import freq_mask, time_mask
from .gru_ops import gru_nonlinearity, output_gru_nonlinearity
from .natural_gradient import NaturalGradientPass, OnlineNaturalGradient, natural_gradient_params
from .op_registry import Frames, Gradients, NaturalGradient, Statistics, op_spec, register_op
from .statistics_ops import statistics_extraction, statistics_pooling

# The affine types, whose bias is always there (graph.py and lstm_loop.py step them as matrix products).
AFFINE_TYPES = tuple(c.type_name for c in (NaturalGradientAffineComponent, AffineComponent, FixedAffineComponent))
# LstmNonlinearityComponent::InitNaturalGradient (not configurable, not stored in the file).
LSTM_NATURAL_GRADIENT = dict(rank=20, update_period=2, num_samples_history=1000.0, alpha=4.0)
# GruNonlinearityComponent::TanhStatsAndSelfRepair's hard-coded share of minibatches with statistics.
GRU_STATS_PROBABILITY = 0.5
# The buffers that training accumulates in place (Kaldi's component statistics).
STATISTICS_BUFFERS = ("stats_count", "stats_sum", "stats_sumsq", "act_value_sum", "act_value_sqsum", "act_count")


class ComponentOp(nn.Module):
    def __init__(self, component: Component):
        super().__init__()
        self.component = component
        self.type_name = component.type_name
        self.spec = op_spec(self.type_name)
        self.spec.check(component)
        trainable = component.params()
        for name, arr in self.spec.tensors(component).items():
            t = torch.from_numpy(np.array(arr, dtype=np.float32))
            if name in trainable:
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self.spec.statistics.init(self)
        self._init_natural_gradient()
        self.precomputed = self.spec.precompute(component)

    def write_back(self) -> None:
        """Copies trained values into the nnet3 component (for export), statistics included."""
        for name, arr in self.component.params().items():
            arr[...] = getattr(self, name).detach().cpu().numpy().reshape(arr.shape)
        self.spec.statistics.write_back(self)

    def zero_stats(self) -> None:
        """Kaldi's Component::ZeroStats (nnet3-train zeroes all component stats before training):
        the accumulators here and the statistics fields of the component that this module never
        accumulates (self-repair, output-derivative and attention statistics). BatchNorm in test mode keeps
        its statistics, as in Kaldi."""
        self.spec.statistics.zero(self)

    def scale_stats(self, scale: float) -> None:
        """BatchNormComponent::Scale: count, sum and sum of squares alike (0 zeroes them)."""
        with torch.no_grad():
            for t in (self.stats_count, self.stats_sum, self.stats_sumsq):
                t.mul_(scale)

    # -- activation statistics (`ActivationStats`) ---------------------------------------
    def _store_activation_stats(self, values: torch.Tensor) -> None:
        """Adds the values of the nonlinearities on some frames: (..., dim) or (..., 5, C)."""
        values = values.detach()
        rows = tuple(range(values.dim() - self.act_value_sum.dim()))   # any layout of the leading dims
        # one call's sums in the values' precision, the totals in double
        self.add_activation_sums(values.sum(rows), (values * values).sum(rows),
                                 values.numel() // self.act_value_sum.numel())

    @torch.no_grad()
    def add_activation_sums(self, value_sum: torch.Tensor, value_sqsum: torch.Tensor, count: int) -> None:
        """Adds the sums of the values and of their squares over `count` rows."""
        self._act_stored = True  # Kaldi sizes empty statistics on the first frames it stores
        self.act_value_sum += value_sum
        self.act_value_sqsum += value_sqsum
        self.act_count += count

    def keeps_stats(self) -> bool:
        """Whether this computation's nonlinearity values count: Kaldi accumulates them in the
        backward pass, so only in training with derivatives."""
        return self.training and torch.is_grad_enabled()

    def activation_stats(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(value_sum, deriv_sum, count) accumulated so far, as Kaldi holds them in memory."""
        value_sum = self.act_value_sum.detach().cpu().numpy()
        mask = self.act_sigmoid_mask.cpu().numpy()
        count = float(self.act_count)
        deriv_sum = mask * value_sum + (1.0 - mask) * count - self.act_value_sqsum.detach().cpu().numpy()
        return value_sum, deriv_sum, count

    # -- natural gradient ----------------------------------------------------------------
    # The preconditioners are plain attributes (not parameters or buffers): Kaldi never writes
    # them, averaging does not touch them, and each job starts with fresh ones.
    def _init_natural_gradient(self) -> None:
        ng = self.spec.natural_gradient
        self.preconditioners = ng.preconditioners(self.component) if ng is not None else ()
        # Kaldi's is_gradient_: the exact gradient (UpdateSimple) instead of the natural gradient.
        self.use_natural_gradient = bool(self.preconditioners) and not getattr(self.component, "is_gradient", False)
        self._ng_pass: NaturalGradientPass | None = None
        self._ng_params: dict[str, torch.Tensor] = {}

    @property
    def has_natural_gradient(self) -> bool:
        return bool(self.preconditioners)

    def reset_preconditioners(self) -> None:
        for p in self.preconditioners:
            p.reset()

    def begin_pass(self, min_deriv_time: int | None = None, max_deriv_time: int | None = None) -> None:
        """Starts one forward computation: if it is a training computation that will be
        backpropagated, this computation's uses of the parameters go through one natural-gradient
        node (see `natural_gradient.NaturalGradientPass`)."""
        self.end_pass()
        if not (self.use_natural_gradient and self.training and torch.is_grad_enabled()):
            return
        names = [n for n in self.spec.natural_gradient.params if n in self.component.params()]
        params = [getattr(self, n) for n in names]
        if not any(p.requires_grad for p in params):
            return
        self._ng_pass = NaturalGradientPass(self._natural_gradients, min_deriv_time, max_deriv_time)
        self._ng_params = dict(zip(names, natural_gradient_params(self._ng_pass, *params)))

    def end_pass(self) -> None:
        self._ng_pass = None
        self._ng_params = {}

    @property
    def ng_pass(self) -> NaturalGradientPass | None:
        return self._ng_pass

    def param(self, name: str) -> torch.Tensor:
        """The tensor this computation uses for parameter `name`."""
        return self._ng_params.get(name) if self._ng_pass is not None else getattr(self, name)

    def _natural_gradients(self, ng_pass: NaturalGradientPass, grads: Gradients) -> Gradients:
        """Kaldi's natural-gradient Update for one computation: the gradients (of -objective, so
        the optimizer's descent is Kaldi's ascent) replacing the plain `grads`."""
        return self.spec.natural_gradient.update(self, ng_pass, grads)

    # -- the math ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor, times: torch.Tensor | None = None,
                out_times: torch.Tensor | None = None, first_frame: int | None = None,
                frame_stride: int = 1) -> torch.Tensor:
        """`x`: (..., input_dim). `times`: frame index of each row's time axis, needed only by
        BackpropTruncation's zeroing in training (shape broadcastable to x[..., 0]).
        `out_times`: the frames to compute, for the statistics components, which summarize
        other frames of their input (x on `times`; default: the same frames). `first_frame`,
        `frame_stride`: x[:, k] is frame first_frame + k frame_stride for (N, T, dim) input, as
        host integers (natural gradient leaves out the frames without derivatives by them)."""
        return self.spec.forward(self, x, Frames(times, out_times, first_frame, frame_stride))


# -- statistics -----------------------------------------------------------------------
@dataclass(frozen=True)
class ActivationStats(Statistics):
    """Kaldi's value/derivative statistics of a type's sigmoid and tanh units. `sigmoid(c)`: 1
    for a sigmoid unit, 0 for a tanh one, in the statistics' shape; `clear(c)`: the component's
    statistics fields that ZeroStats also clears and this module never accumulates.

    Kaldi keeps, per unit, value_sum = sum of y and deriv_sum = sum of f'(x) over the frames it
    saw while training, with count = number of frames (rows); files hold value_sum/count and
    deriv_sum/count (<ValueAvg>, <DerivAvg>) and <Count>. SigmoidComponent/TanhComponent store
    them in the forward pass (StoreStats: every training frame); LstmNonlinearityComponent in
    its backward pass (only frames that are backpropagated), for its 5 nonlinearities
    i_t, f_t (sigmoid), tanh(c_part), o_t (sigmoid), tanh(c_t); the GRU cells for their tanh
    h_t in their consolidated update, on half of the minibatches (`_gru_tanh_stats`). The
    derivative is a function of the value: y(1 - y) for a sigmoid, 1 - y^2 for a tanh, so the
    buffers keep sum(y) and sum(y^2); deriv_sum = w*sum(y) + (1 - w)*count - sum(y^2) with
    w = 1 for sigmoid rows and 0 for tanh rows. Every buffer is a plain sum, so averaging models'
    buffers (nnet3-average averages value_sum, deriv_sum and count alike) commutes with this
    conversion."""
    sigmoid: Callable[[Component], np.ndarray]
    clear: Callable[[Component], None]

    def init(self, op: ComponentOp) -> None:
        c = op.component
        sigmoid = self.sigmoid(c)
        shape = sigmoid.shape
        count = float(c.count)
        # Kaldi's files hold the sums themselves when count is 0; empty vectors mean no stats.
        scale = count if count != 0.0 else 1.0
        value_sum, deriv_sum = (np.asarray(a, np.float64).reshape(shape) * scale if np.size(a) else np.zeros(shape)
                                for a in (c.value_avg, c.deriv_avg))
        sqsum = sigmoid * value_sum + (1.0 - sigmoid) * count - deriv_sum
        op.register_buffer("act_value_sum", torch.from_numpy(value_sum))
        op.register_buffer("act_value_sqsum", torch.from_numpy(sqsum))
        op.register_buffer("act_count", torch.tensor(count, dtype=torch.float64))
        op.register_buffer("act_sigmoid_mask", torch.from_numpy(sigmoid), persistent=False)
        op._act_stored = False

    def write_back(self, op: ComponentOp) -> None:
        """Into the component as Kaldi writes them: sums / count (the sums when count is 0)."""
        c = op.component
        value_sum, deriv_sum, count = op.activation_stats()
        scale = 1.0 / count if count != 0.0 else 1.0
        value_avg = (value_sum * scale).astype(np.float32)
        deriv_avg = (deriv_sum * scale).astype(np.float32)
        # (an LSTM's are never empty: they define its cell dim)
        if np.size(c.value_avg) == 0 and not op._act_stored and count == 0.0 \
                and not value_sum.any() and not deriv_sum.any():
            value_avg = deriv_avg = np.zeros(0, np.float32)  # no stats yet: empty, as Kaldi writes
        c.value_avg, c.deriv_avg, c.count = value_avg, deriv_avg, count

    def zero(self, op: ComponentOp) -> None:
        op.act_value_sum.zero_()
        op.act_value_sqsum.zero_()
        op.act_count.zero_()
        self.clear(op.component)


class BatchNormStats(Statistics):
    """BatchNormComponent's count, sum and sum of squares of its training rows, as Kaldi's
    StoreStats accumulates them; test mode normalizes with them (`_test_mode_stats`)."""

    def init(self, op: ComponentOp) -> None:
        dim = op.component.block_dim
        op.register_buffer("stats_count", torch.zeros((), dtype=torch.float64))
        op.register_buffer("stats_sum", torch.zeros(dim, dtype=torch.float64))
        op.register_buffer("stats_sumsq", torch.zeros(dim, dtype=torch.float64))

    def write_back(self, op: ComponentOp) -> None:
        count = float(op.stats_count)
        if count > 0:
            mean = (op.stats_sum / count).cpu().numpy()
            var = (op.stats_sumsq / count).cpu().numpy() - mean * mean
            op.component.set_stats(count, mean, np.maximum(var, 0.0))

    def zero(self, op: ComponentOp) -> None:
        if not op.component.test_mode:   # Kaldi's test mode keeps them
            op.stats_count.zero_()
            op.stats_sum.zero_()
            op.stats_sumsq.zero_()


class ComponentKeepsStats(Statistics):
    """Statistics the component itself holds and this module never accumulates: only cleared."""

    def zero(self, op: ComponentOp) -> None:
        op.component.zero_stats()


# -- natural-gradient updates ---------------------------------------------------------
def _from_rows(rule):
    """An update computed from the rows the component saw in the computation (input rows x,
    output derivatives g): `rule(preconditioners, x, g, grads)`."""
    def update(op: ComponentOp, ng_pass: NaturalGradientPass, grads: Gradients) -> Gradients:
        rows = ng_pass.rows()
        return grads if rows is None else rule(op.preconditioners, *rows, grads)
    return update


def _matrix_update(preconditioners, x: torch.Tensor, g: torch.Tensor, grads: Gradients) -> Gradients:
    """A matrix's update, g^T x with both sides preconditioned. A bias is preconditioned as one
    more input column of ones (TdnnComponent too, when it has a bias: TdnnComponent::UpdateNaturalGradient)."""
    has_bias = len(grads) == 2
    if has_bias:
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    x_hat, in_scale = preconditioners[0].precondition(x)
    g_hat, out_scale = preconditioners[1].precondition(g)
    update = torch.mm(g_hat.t(), x_hat).mul_(in_scale * out_scale)
    return (update,) if not has_bias else (update[:, :-1], update[:, -1])


def _scales_update(preconditioners, x: torch.Tensor, g: torch.Tensor, grads: Gradients) -> Gradients:
    """Per-element scales' update: the rows x * g preconditioned, summed."""
    p_hat, scale = preconditioners[0].precondition(x * g)
    return (p_hat.sum(0) * scale,)


def _matrix_preconditioners(c: Component) -> tuple[OnlineNaturalGradient, ...]:
    """NaturalGradientAffineComponent's and LinearComponent's: input and output side alike."""
    opts = dict(update_period=c.update_period, num_samples_history=c.num_samples_history, alpha=c.alpha)
    return OnlineNaturalGradient(c.rank_in, **opts), OnlineNaturalGradient(c.rank_out, **opts)


def _if_enabled(preconditioners):
    """Those of a component with use-natural-gradient, none when it is false."""
    return lambda c: preconditioners(c) if c.use_natural_gradient else ()


def _trainable(c: Component) -> dict[str, np.ndarray]:
    return dict(c.params())


# -- affine, linear, TDNN -------------------------------------------------------------
def _affine_tensors(c: Component) -> dict[str, np.ndarray]:
    return {"linear_params": c.linear_params, "bias_params": c.bias_params}


def _tdnn_preconditioners(c: TdnnComponent) -> tuple[OnlineNaturalGradient, ...]:
    """TdnnComponent::InitFromConfig: separate alphas, update period fixed at 4."""
    return tuple(OnlineNaturalGradient(rank, c.UPDATE_PERIOD, c.num_samples_history, alpha)
                 for rank, alpha in ((c.rank_in, c.alpha_in), (c.rank_out, c.alpha_out)))


@register_op(NaturalGradientAffineComponent, tensors=_affine_tensors,
             natural_gradient=NaturalGradient(("linear_params", "bias_params"), _matrix_preconditioners,
                                              _from_rows(_matrix_update)))
@register_op(AffineComponent, FixedAffineComponent, tensors=_affine_tensors)
def _affine(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _matrix_product(op, x, frames, op.param("bias_params"))


@register_op(LinearComponent, tensors=_trainable,
             natural_gradient=NaturalGradient(("linear_params",), _if_enabled(_matrix_preconditioners),
                                              _from_rows(_matrix_update)))
@register_op(TdnnComponent, tensors=_trainable,
             natural_gradient=NaturalGradient(("linear_params", "bias_params"), _if_enabled(_tdnn_preconditioners),
                                              _from_rows(_matrix_update)))
def _linear(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    """TdnnComponent's `x` is already spliced over its time offsets (graph.py reads the node's
    input through Component.input_descriptor); it has a bias when use-bias is true."""
    bias = op.param("bias_params") if "bias_params" in op.component.params() else None
    return _matrix_product(op, x, frames, bias)


def _matrix_product(op: ComponentOp, x: torch.Tensor, frames: Frames, bias: torch.Tensor | None) -> torch.Tensor:
    y = torch.nn.functional.linear(x, op.param("linear_params"), bias)
    if op.ng_pass is not None:
        op.ng_pass.record(x, y, frames.first_frame, frames.frame_stride)
    return y


# -- convolution (4.23) ---------------------------------------------------------------
def _convolution_preconditioners(c: TimeHeightConvolutionComponent) -> tuple[OnlineNaturalGradient, ...]:
    """TimeHeightConvolutionComponent::InitFromConfig: update period 1, history in minibatches."""
    return tuple(OnlineNaturalGradient(rank, num_minibatches_history=c.num_minibatches_history, alpha=alpha)
                 for rank, alpha in ((c.rank_in, c.alpha_in), (c.rank_out, c.alpha_out)))


def _convolution_update(op: ComponentOp, ng_pass: NaturalGradientPass, grads: Gradients) -> Gradients:
    """TimeHeightConvolutionComponent::UpdateNaturalGradient: the minibatch's parameter
    derivative [W | b] is preconditioned as num-filters-out rows, then its transpose as rows
    of dim num-filters-out; no per-frame rows are involved."""
    grad_w, grad_b = grads
    if grad_w is None or grad_b is None:
        return grad_w, grad_b
    params = torch.cat([grad_w, grad_b[:, None]], dim=1)
    p_hat, in_scale = op.preconditioners[0].precondition(params)
    pt_hat, out_scale = op.preconditioners[1].precondition(p_hat.t().contiguous())
    update = pt_hat.t() * (in_scale * out_scale)
    return update[:, :-1], update[:, -1]


@register_op(TimeHeightConvolutionComponent, tensors=_trainable, precompute=ConvolutionGeometry,
             natural_gradient=NaturalGradient(("linear_params", "bias_params"),
                                              _if_enabled(_convolution_preconditioners), _convolution_update))
def _convolution(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return time_height_convolution(x, op.param("linear_params"), op.param("bias_params"), op.precomputed)


@register_op(SumBlockComponent)
def _sum_block(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return sum_blocks(x, op.component)


# -- nonlinearities -------------------------------------------------------------------
def _clear_self_repair_stats(c: Component) -> None:
    """NonlinearComponent's output-derivative and self-repair statistics."""
    c.oderiv_rms = np.zeros_like(np.asarray(c.oderiv_rms, np.float32))
    c.oderiv_count = 0.0
    c.num_dims_self_repaired = 0.0
    c.num_dims_processed = 0.0


def _stored(op: ComponentOp, y: torch.Tensor) -> torch.Tensor:
    """Kaldi's StoreStats for a sigmoid or tanh: every training frame's values."""
    if op.training:
        op._store_activation_stats(y)
    return y


@register_op(SigmoidComponent, statistics=ActivationStats(lambda c: np.ones(c.dim), _clear_self_repair_stats))
def _sigmoid(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _stored(op, torch.sigmoid(x))


@register_op(TanhComponent, statistics=ActivationStats(lambda c: np.zeros(c.dim), _clear_self_repair_stats))
def _tanh(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _stored(op, torch.tanh(x))


@register_op(RectifiedLinearComponent)
def _relu(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return torch.relu(x)


@register_op(LogSoftmaxComponent)
def _log_softmax(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return torch.log_softmax(x, dim=-1)


@register_op(SoftmaxComponent)
def _softmax(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return torch.clamp(torch.softmax(x, dim=-1), min=1e-20)


@register_op(NoOpComponent, ClipGradientComponent)
def _identity(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return x


# -- LSTM and GRU cells (4.7, 4.20) ---------------------------------------------------
def _lstm_sigmoid_rows(c: LstmNonlinearityComponent) -> np.ndarray:
    """i_t, f_t, tanh(c_part), o_t, tanh(c_t): sigmoid, sigmoid, tanh, sigmoid, tanh."""
    return np.array([1.0, 1.0, 0.0, 1.0, 0.0])[:, None] * np.ones((5, c.cell_dim()))


def _clear_lstm_stats(c: LstmNonlinearityComponent) -> None:
    c.self_repair_prob = np.zeros_like(np.asarray(c.self_repair_prob, np.float32))


def _lstm_preconditioners(c: LstmNonlinearityComponent) -> tuple[OnlineNaturalGradient, ...]:
    return (OnlineNaturalGradient(**LSTM_NATURAL_GRADIENT),)


def _peephole_update(op: ComponentOp, ng_pass: NaturalGradientPass, grads: Gradients) -> Gradients:
    """Kaldi preconditions the 3 x C peephole derivative summed over the minibatch, as 3 rows."""
    g = grads[0]
    if g is None:
        return (None,)
    g_hat, scale = op.preconditioners[0].precondition(g.reshape(3, -1))
    return ((g_hat * scale).reshape(g.shape),)


@register_op(LstmNonlinearityComponent, tensors=lambda c: {"peepholes": c.peepholes},
             statistics=ActivationStats(_lstm_sigmoid_rows, _clear_lstm_stats),
             natural_gradient=NaturalGradient(("peepholes",), _lstm_preconditioners, _peephole_update))
def _lstm(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return lstm_nonlinearity(x, op.param("peepholes"), op._store_activation_stats if op.keeps_stats() else None)


def _clear_gru_stats(c: Component) -> None:
    c.self_repair_total = 0.0


def _gru_tanh_stats(op: ComponentOp, h: torch.Tensor) -> None:
    """GruNonlinearityComponent::TanhStatsAndSelfRepair in the consolidated update (all the
    minibatch's backpropagated rows of h_t, once): on a random half of the minibatches the
    tanh statistics; the self-repair term it then adds to W^h's derivative is left out, as for
    every nonlinearity in kaldi-avg."""
    if float(torch.rand(())) > GRU_STATS_PROBABILITY:
        return
    op._store_activation_stats(h)


def _gru_update(rule):
    """A GRU cell's rows are [W^h's input | h_t] (`_gru_cell`): h_t's part gives the tanh
    statistics, the rest `rule`'s input rows."""
    def update(op: ComponentOp, ng_pass: NaturalGradientPass, grads: Gradients) -> Gradients:
        rows = ng_pass.rows()
        if rows is None:
            return grads
        x, g = rows
        C = op.component.cell_dim
        _gru_tanh_stats(op, x[:, -C:])
        return rule(op.preconditioners, x[:, :-C], g, grads)
    return update


def _gru_cell(op: ComponentOp, x: torch.Tensor, cell) -> torch.Tensor:
    ng = op.ng_pass
    # W^h's natural gradient and the tanh statistics come from these rows (`_gru_update`);
    # h_t rides along with the input rows.
    record = None if ng is None else lambda u, a, h: ng.record(torch.cat([u, h.detach()], -1), a)
    return cell(x, op.param("w_h"), record)


def _gru_preconditioners(c: GruNonlinearityComponent) -> tuple[OnlineNaturalGradient, ...]:
    """InitFromConfig: num-samples-history the default 2000."""
    return tuple(OnlineNaturalGradient(rank, c.update_period, alpha=c.alpha) for rank in (c.rank_in, c.rank_out))


def _output_gru_preconditioners(c: OutputGruNonlinearityComponent) -> tuple[OnlineNaturalGradient, ...]:
    return (OnlineNaturalGradient(c.rank, c.update_period, alpha=c.alpha),)


_GRU_STATS = ActivationStats(lambda c: np.zeros(c.cell_dim), _clear_gru_stats)   # h_t is a tanh


@register_op(GruNonlinearityComponent, tensors=lambda c: {"w_h": c.w_h}, statistics=_GRU_STATS,
             natural_gradient=NaturalGradient(("w_h",), _gru_preconditioners, _gru_update(_matrix_update)))
def _gru(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _gru_cell(op, x, gru_nonlinearity)


@register_op(OutputGruNonlinearityComponent, tensors=lambda c: {"w_h": c.w_h}, statistics=_GRU_STATS,
             natural_gradient=NaturalGradient(("w_h",), _output_gru_preconditioners, _gru_update(_scales_update)))
def _output_gru(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _gru_cell(op, x, output_gru_nonlinearity)


@register_op(BackpropTruncationComponent)
def _backprop_truncation(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    c = op.component
    if op.training and torch.is_grad_enabled():
        return _BackpropTruncation.apply(x, frames.times, c.scale, c.clipping_threshold,
                                         c.zeroing_threshold, c.zeroing_interval, c.recurrence_interval)
    return x * c.scale


@register_op(ElementwiseProductComponent)
def _elementwise_product(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    c = op.component
    k = c.input_dim() // c.output_dim()
    out = x[..., :c.output_dim()]
    for i in range(1, k):
        out = out * x[..., i * c.output_dim():(i + 1) * c.output_dim()]
    return out


# -- scales and offsets ---------------------------------------------------------------
def _scales_preconditioners(c: NaturalGradientPerElementScaleComponent) -> tuple[OnlineNaturalGradient, ...]:
    return (OnlineNaturalGradient(c.rank, c.update_period, c.num_samples_history, c.alpha),)


@register_op(NaturalGradientPerElementScaleComponent, tensors=lambda c: {"scales": c.scales},
             natural_gradient=NaturalGradient(("scales",), _scales_preconditioners, _from_rows(_scales_update)))
@register_op(PerElementScaleComponent, tensors=lambda c: {"scales": c.scales})
def _per_element_scale(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    y = x * op.param("scales")
    if op.ng_pass is not None:
        op.ng_pass.record(x, y, frames.first_frame, frames.frame_stride)
    return y


@register_op(FixedScaleComponent, tensors=lambda c: {"scales": c.scales})
def _fixed_scale(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return x * op.scales


@register_op(FixedBiasComponent, tensors=lambda c: {"bias": c.bias})
def _fixed_bias(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return x + op.bias


@register_op(ScaleAndOffsetComponent, tensors=lambda c: {"scales": c.scales, "offsets": c.offsets})
def _scale_and_offset(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return _blocks(x, op.scales.numel(), lambda b: b * _ensure_nonzero(op.scales) + op.offsets)


@register_op(PermuteComponent)
def _permute(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return x[..., list(op.component.column_map)]


# -- normalization (4.9) --------------------------------------------------------------
@register_op(NormalizeComponent)
def _normalize(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return normalize_rows(x, op.component)


@register_op(BatchNormComponent, tensors=lambda c: {"stats_mean": c.stats_mean, "stats_var": c.stats_var},
             statistics=BatchNormStats())
def _batchnorm(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    c = op.component
    bd = c.block_dim
    rows = x.reshape(-1, bd)
    if op.training:
        mean = rows.mean(0)
        var = rows.var(0, unbiased=False)
        with torch.no_grad():
            op.stats_count += rows.shape[0]
            op.stats_sum += rows.sum(0).double()
            op.stats_sumsq += (rows.double() ** 2).sum(0)
    else:
        mean, var = _test_mode_stats(op)
    scale = c.target_rms * torch.rsqrt(var + c.epsilon)
    return ((rows - mean) * scale).reshape(x.shape)


def _test_mode_stats(op: ComponentOp) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and variance test mode normalizes with: those of the statistics accumulated
    since the last ZeroStats, as `write_back` would write them into N.mdl (so a diagnostic of
    the live module equals one of the saved model), else the component's own."""
    count = op.stats_count
    # torch.where rather than a Python test: no host sync on CUDA
    mean = torch.where(count > 0, op.stats_sum / count.clamp(min=1e-30), op.stats_mean.double())
    var = torch.where(count > 0, (op.stats_sumsq / count.clamp(min=1e-30) - mean * mean).clamp(min=0.0),
                      op.stats_var.double())
    return mean.to(op.stats_mean.dtype), var.to(op.stats_var.dtype)


# -- dropout and SpecAugment (4.21) ---------------------------------------------------
def _random_dropout(op: ComponentOp) -> bool:
    """Training mode of a dropout component: Kaldi's <TestMode> overrides training."""
    return op.training and not op.component.test_mode


@register_op(DropoutComponent)
def _dropout(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    p = op.component.dropout_proportion
    if _random_dropout(op) and p > 0:
        # Kaldi's dropout is not inverted: kept values are not rescaled. Per frame: one draw per row.
        draws = torch.rand_like(x[..., :1] if op.component.dropout_per_frame else x)
        return x * (draws > p).to(x.dtype)
    return x * (1.0 - p)


@register_op(DropoutMaskComponent)
def _dropout_mask(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return dropout_mask(x.shape[:-1], op.component, _random_dropout(op), x.dtype, x.device)


def _no_time_period_specaugment(c: GeneralDropoutComponent) -> None:
    if c.spec_augment_max_proportion != 0.0 and c.time_period > 0:
        raise NetworkConfigError("GeneralDropoutComponent with specaugment-max-proportion and time-period "
                          "has no PyTorch implementation in kaldi-avg")


@register_op(GeneralDropoutComponent, check=_no_time_period_specaugment)
def _general_dropout(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    c = op.component
    if _random_dropout(op) and c.spec_augment_max_proportion != 0.0:
        return x * freq_mask(x, c)   # SpecAugment ignores dropout-proportion
    if not _random_dropout(op) or c.dropout_proportion == 0.0:
        return x
    return x * general_dropout_mask(x, frames.times, c)


@register_op(SpecAugmentTimeMaskComponent)
def _time_mask(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    if not _random_dropout(op) or op.component.zeroed_proportion == 0.0:
        return x
    # A frame stepped alone (inside a recurrence) is a sequence of one frame.
    rows = x if x.dim() == 3 else x[:, None]
    return (rows * time_mask(rows, frames.times if x.dim() == 3 else None, op.component)).reshape(x.shape)


# -- attention (4.24) and statistics (4.25): other frames' rows -----------------------
@register_op(RestrictedAttentionComponent, statistics=ComponentKeepsStats())
def _attention(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return restricted_attention(x, op.component)   # `x`: its window frames (input_descriptor)


@register_op(StatisticsExtractionComponent)
def _statistics_extraction(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return statistics_extraction(x, frames.times, frames.out_times, op.component)


@register_op(StatisticsPoolingComponent)
def _statistics_pooling(op: ComponentOp, x: torch.Tensor, frames: Frames) -> torch.Tensor:
    return statistics_pooling(x, frames.times, frames.out_times, op.component)


def lstm_nonlinearity(x: torch.Tensor, peep: torch.Tensor, store_stats=None) -> torch.Tensor:
    """LstmNonlinearityComponent (4.7): input [i, f, c, o, c_prev (, 3 dropout scales)] -> [c_t, m_t].
    `store_stats`, if given, receives the 5 nonlinearities' values as (..., 5, C): i_t, f_t,
    tanh(c_part), o_t, tanh(c_t) (the rows of Kaldi's ValueAvg/DerivAvg)."""
    C = peep.shape[1]
    i_part, f_part, c_part, o_part, c_prev = (x[..., k * C:(k + 1) * C] for k in range(5))
    if x.shape[-1] == 5 * C + 3:
        i_scale, f_scale, o_scale = (x[..., 5 * C + k:5 * C + k + 1] for k in range(3))
    else:
        i_scale = f_scale = o_scale = 1.0
    i_t = torch.sigmoid(i_part + peep[0] * c_prev)
    f_t = torch.sigmoid(f_part + peep[1] * c_prev)
    tanh_c_part = torch.tanh(c_part)
    c_t = f_t * f_scale * c_prev + i_t * i_scale * tanh_c_part
    o_t = torch.sigmoid(o_part + peep[2] * c_t)  # the output gate peeps at the new cell
    tanh_c_t = torch.tanh(c_t)
    m_t = o_t * o_scale * tanh_c_t
    if store_stats is not None:
        with torch.no_grad():
            store_stats(torch.stack([i_t, f_t, tanh_c_part, o_t, tanh_c_t], dim=-2))
    return torch.cat([c_t, m_t], dim=-1)


def dropout_mask(rows: torch.Size, c: Component, training: bool, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """DropoutMaskComponent: (*rows, output-dim) scales, one row per frame; its input is ignored.
    Proportion 0 gives ones. Test mode gives 1 - p (continuous: 1). Training gives 0 with
    probability p and 1 otherwise, not rescaled (continuous: uniform on [1 - 2p, 1 + 2p])."""
    p, shape = c.dropout_proportion, (*rows, c.dim)
    if p == 0:
        return torch.ones(shape, dtype=dtype, device=device)
    if c.continuous:
        if not training:
            return torch.ones(shape, dtype=dtype, device=device)
        return 1.0 - 2.0 * p + 4.0 * p * torch.rand(shape, dtype=dtype, device=device)
    if not training:
        return torch.full(shape, 1.0 - p, dtype=dtype, device=device)
    u = torch.rand(shape, dtype=dtype, device=device)
    keep = u > p
    if c.dim in (2, 3):
        # Kaldi's LSTM case: the first two scales (input and forget gates) come from one uniform u,
        # dropped for u < p and for u > 1 - p, so for p <= 0.5 they are never dropped together.
        keep[..., 1] = u[..., 0] < 1.0 - p
    return keep.to(dtype)


def general_dropout_mask(x: torch.Tensor, times: torch.Tensor | None, c: Component) -> torch.Tensor:
    """GeneralDropoutComponent's training mask for `x` (N, T, dim) or (N, dim), broadcastable
    to x: one row of block-dim scales per sequence n, or per (n, floor(t / time-period)) when
    time-period > 0, shared by every block of a frame (GetMemo, PrecomputeIndexes). 0/1 with
    P(0) = p rescaled by 1/(1-p); continuous: uniform on [1-2p, 1+2p]. A recurrent loop steps
    frames one call at a time, so there each frame draws its own rows."""
    p, bd = c.dropout_proportion, c.block_dim
    n = x.shape[0]
    if c.time_period > 0 and times is not None:
        groups = torch.div(times.reshape(-1), c.time_period, rounding_mode="floor")
        _, index = torch.unique(groups, return_inverse=True)
        u = torch.rand(n, int(index.max()) + 1, bd, dtype=x.dtype, device=x.device)[:, index.to(x.device)]
    else:
        u = torch.rand(n, 1, bd, dtype=x.dtype, device=x.device)
    mask = 1.0 - 2.0 * p + 4.0 * p * u if c.continuous else (u > p).to(x.dtype) / (1.0 - p)
    if x.dim() == 2:
        mask = mask[:, 0]
    blocks = c.dim // bd
    return mask.unsqueeze(-2).expand(*mask.shape[:-1], blocks, bd).reshape(*mask.shape[:-1], c.dim)


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
    """Forward y = scale x. Backward as Kaldi: `truncate_derivative` (4.8)."""

    @staticmethod
    def forward(ctx, x, times, scale, clip, zero_thresh, zero_interval, rec_interval):
        ctx.save_for_backward(times if times is not None else torch.empty(0))
        ctx.args = (scale, clip, zero_thresh, zero_interval, rec_interval, times is not None)
        return x * scale

    @staticmethod
    def backward(ctx, g):
        (times,) = ctx.saved_tensors
        scale, clip, zero_thresh, zero_interval, rec_interval, have_times = ctx.args
        crossings = None
        if have_times and zero_interval > 0 and zero_thresh > 0:
            # `times` is the time axis of g: (T,) for (N, T, dim) values, (1,) for one frame (N, dim).
            crossings = truncation_crossings(times.to(g.device), g.shape[0], zero_interval, rec_interval)
            crossings = (crossings if g.dim() == 3 else crossings[:, 0]).unsqueeze(-1)
        return truncate_derivative(g, scale, clip, zero_thresh, crossings), None, None, None, None, None, None


def truncation_crossings(times: torch.Tensor, num_rows: int, zero_interval: int, rec_interval: int) -> torch.Tensor:
    """(N, T) bool: whether row n at frame times[t] crosses a zeroing boundary of
    BackpropTruncationComponent, floor((t-n)/I) != floor((t-R-n)/I)."""
    n = torch.arange(num_rows, device=times.device)[:, None]
    t = times[None, :]
    return (torch.div(t - n, zero_interval, rounding_mode="floor")
            != torch.div(t - rec_interval - n, zero_interval, rounding_mode="floor"))


def truncate_derivative(g: torch.Tensor, scale: float, clip: float, zero_thresh: float,
                        crossings: torch.Tensor | None) -> torch.Tensor:
    """BackpropTruncationComponent's backward (4.8): scale, clip each row's norm to `clip` (if
    > 0), and zero the rows that cross a zeroing boundary (`crossings`, broadcastable to
    g[..., :1]) with a norm above `zero_thresh`."""
    if scale != 1.0:
        g = g * scale
    norm = g.norm(dim=-1, keepdim=True)
    zero = None if crossings is None else crossings & (norm > zero_thresh)
    if clip <= 0 and zero is None:
        return g if scale != 1.0 else g.clone()
    # one factor per row: the clipping, and 0 for the rows to zero
    factor = (clip / norm.clamp_(min=1e-30)).clamp_(max=1.0) if clip > 0 else torch.ones_like(norm)
    if zero is not None:
        factor.masked_fill_(zero, 0.0)
    return g * factor


def training_statistics(module: nn.Module) -> list[torch.Tensor]:
    """Every component's statistics buffers in `module`, in a fixed order (what nnet3-average
    averages besides the parameters)."""
    out = []
    for op in module.modules():
        if isinstance(op, ComponentOp):
            buffers = dict(op.named_buffers(recurse=False))
            out.extend(buffers[name] for name in STATISTICS_BUFFERS if name in buffers)
    return out
