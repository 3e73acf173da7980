"""KaldiSgd against hand-computed UpdateNnetWithMaxChange / momentum values."""
import math

import torch

from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.optim import KaldiSgd, scale_parameters

XCONFIG = """input dim=2 name=input
relu-renorm-layer name=h dim=3
output-layer name=output dim=3
"""


def module(max_changes=None):
    nnet = build_nnet(XCONFIG, "test", seed=1)
    for name, value in (max_changes or {}).items():
        nnet.components[name].max_change = value
    return NnetModule(nnet)


def set_grads(m, value_by_component):
    """grad(loss) = -grad(objective): give the objective gradient, store its negative."""
    for name, g in value_by_component.items():
        op = m.op(name)
        op.linear_params.grad = -torch.full_like(op.linear_params, g)
        op.bias_params.grad = -torch.full_like(op.bias_params, g)


def snapshot(m, name):
    op = m.op(name)
    return op.linear_params.detach().clone(), op.bias_params.detach().clone()


def test_per_component_and_global_max_change():
    m = module({"h.affine": 0.0, "output.affine": 1.0})
    before_h, before_o = snapshot(m, "h.affine"), snapshot(m, "output.affine")
    opt = KaldiSgd(m, learning_rate=1.0, momentum=0.0, max_param_change=0.0)
    # h.affine: 3x2 + 3 = 9 values of 0.1 -> |delta| = 0.3; output.affine: 3x3 + 3 = 12 values of 1 -> sqrt(12)
    set_grads(m, {"h.affine": 0.1, "output.affine": 1.0})
    info = opt.step()
    assert info.applied and info.num_max_change_applied == 1 and not info.global_max_change_applied
    after_h, after_o = snapshot(m, "h.affine"), snapshot(m, "output.affine")
    torch.testing.assert_close(after_h[0] - before_h[0], torch.full((3, 2), 0.1))
    f = 1.0 / math.sqrt(12.0)
    torch.testing.assert_close(after_o[0] - before_o[0], torch.full((3, 3), f), rtol=1e-5, atol=1e-6)

    # global max-param-change: total = sqrt(0.3^2 + 1^2); scaled to 0.5
    m = module({"h.affine": 0.0, "output.affine": 1.0})
    before_h = snapshot(m, "h.affine")
    opt = KaldiSgd(m, learning_rate=1.0, momentum=0.0, max_param_change=0.5)
    set_grads(m, {"h.affine": 0.1, "output.affine": 1.0})
    info = opt.step()
    total = math.sqrt(0.3 ** 2 + 1.0)
    assert info.global_max_change_applied
    assert abs(info.scale - 0.5 / total) < 1e-9
    torch.testing.assert_close(snapshot(m, "h.affine")[0] - before_h[0], torch.full((3, 2), 0.1 * 0.5 / total),
                               rtol=1e-5, atol=1e-7)


def test_momentum_scales_step_by_one_minus_momentum():
    m = module({"h.affine": 0.0, "output.affine": 0.0})
    before = snapshot(m, "output.affine")[1]
    opt = KaldiSgd(m, learning_rate=0.01, momentum=0.5, max_param_change=0.0)
    set_grads(m, {"output.affine": 2.0})
    opt.step()
    torch.testing.assert_close(snapshot(m, "output.affine")[1] - before, torch.full((3,), 0.5 * 0.02))
    set_grads(m, {"output.affine": 2.0})
    opt.step()
    # delta = 0.5 * 0.02 + 0.02 = 0.03, applied with 0.5 -> total 0.01 + 0.015
    torch.testing.assert_close(snapshot(m, "output.affine")[1] - before, torch.full((3,), 0.025))


def test_momentum_with_max_change_uses_scaled_norm():
    m = module({"h.affine": 0.0, "output.affine": 0.1})
    before = snapshot(m, "output.affine")[1]
    opt = KaldiSgd(m, learning_rate=1.0, momentum=0.5, max_param_change=0.0)
    set_grads(m, {"output.affine": 1.0})
    opt.step()
    # |delta| = sqrt(12); |delta| * 0.5 > 0.1 -> factor = 0.1 / (sqrt(12) * 0.5); step = 0.5 * factor * 1
    expected = 0.5 * 0.1 / (math.sqrt(12) * 0.5)
    torch.testing.assert_close(snapshot(m, "output.affine")[1] - before, torch.full((3,), expected),
                               rtol=1e-5, atol=1e-7)


def test_non_finite_update_is_skipped():
    m = module()
    before = snapshot(m, "output.affine")[0]
    opt = KaldiSgd(m, learning_rate=1.0, momentum=0.5)
    set_grads(m, {"output.affine": float("nan"), "h.affine": 0.1})
    info = opt.step()
    assert not info.applied and opt.num_skipped == 1
    torch.testing.assert_close(snapshot(m, "output.affine")[0], before)
    assert all(float(d.abs().sum()) == 0 for ds in opt.delta for d in ds)


def test_l2_and_shrink():
    m = module({"h.affine": 0.0, "output.affine": 0.0})
    m.nnet.components["output.affine"].l2_regularize = 0.5
    p0 = snapshot(m, "output.affine")[1]
    opt = KaldiSgd(m, learning_rate=0.1, momentum=0.0, max_param_change=0.0, l2_regularize_factor=0.5)
    set_grads(m, {"output.affine": 0.0, "h.affine": 0.0})
    opt.step(num_sequences=4)
    # delta = -2 * (4 * 0.5) * 0.1 * 0.5 * p = -0.2 p
    torch.testing.assert_close(snapshot(m, "output.affine")[1], p0 * 0.8)
    scale_parameters(m, 0.5)
    torch.testing.assert_close(snapshot(m, "output.affine")[1], p0 * 0.4)


def test_max_deriv_time_is_relative_to_the_chunks_last_output_frame():
    """train_rnn.py gives nnet3-train --optimization.max-deriv-time-relative: the limit is that many
    frames after each minibatch's last output frame (what lets BLSTMs train with right context)."""
    from types import SimpleNamespace

    from kaldi_avg.train.objective import forward_minibatch
    seen = {}

    def forward_outputs(*args, **kwargs):   # NnetModule.forward_outputs' shape: every output_stride-th frame
        seen.update(kwargs)
        return [torch.zeros(2, (args[2] - 1) // kwargs.get("output_stride", 1) + 1, 4)]

    module = SimpleNamespace(forward_outputs=forward_outputs)
    mb = SimpleNamespace(features=torch.zeros(2, 30, 3), left_context=5, targets=torch.zeros(2, 7, dtype=torch.long),
                         ivectors=None, frame_subsampling_factor=1)
    forward_minibatch(module, mb, -9, 11)
    assert (seen["min_deriv_time"], seen["max_deriv_time"]) == (-9, 6 + 11)
    forward_minibatch(module, mb, None, None)
    assert seen["max_deriv_time"] is None
    # chain: outputs at times 0, 3, ..., 18; the limit is relative to the last of them
    mb.frame_subsampling_factor = 3
    assert forward_minibatch(module, mb, -9, 11).shape == (2, 7, 4)
    assert seen["max_deriv_time"] == 18 + 11 and seen["output_stride"] == 3
