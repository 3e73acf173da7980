"""The fused fast-LSTM loop (`kaldi_avg/model/lstm_loop.py`) computes what the frame-by-frame
executor computes: values, parameter gradients with and without natural gradient (over several
minibatches, so the preconditioners' state is compared too), input gradients, statistics."""
import copy

import numpy as np
import pytest
import torch

from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule, _Eval

from .networks import randomized

LAYERS = {
    "lstmp": "fast-lstmp-layer name=l cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1",
    "lstm-delay3-decay": "fast-lstm-layer name=l cell-dim=8 delay=-3 decay-time=20",
    "lstmp-dropout": ("fast-lstmp-layer name=l cell-dim=8 recurrent-projection-dim=4 "
                      "non-recurrent-projection-dim=4 delay=-2 dropout-proportion=0.3"),
    "blstmp": ("fast-lstmp-layer name=f cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 "
               "delay=-1 input=tdnn\nfast-lstmp-layer name=b cell-dim=8 recurrent-projection-dim=4 "
               "non-recurrent-projection-dim=4 delay=1 input=tdnn\nrelu-renorm-layer name=l input=Append(f, b) dim=6"),
}
LEFT, RIGHT, WIDTH, N = 12, 6, 8, 5


def network(layers: str):
    text = (f"input dim=5 name=input\nrelu-renorm-layer name=tdnn input=Append(-1,0,1) dim=10\n{layers}\n"
            f"output-layer name=output input=l dim=7 max-change=1.5\n")
    return randomized(build_nnet(text, "test"), scale=0.3)


def train_steps(module, feats, steps=3, natural_gradient=True):
    """Loss, input gradient and parameter gradients of `steps` forward/backward passes."""
    module.train()
    module.set_natural_gradient(natural_gradient)
    module.reset_preconditioners()
    out = []
    for k in range(steps):
        x = feats.clone().requires_grad_(True)
        module.zero_grad()
        torch.manual_seed(k)          # the same dropout masks in both modules
        y = module(x, LEFT, WIDTH, min_deriv_time=-3, max_deriv_time=WIDTH + 2)
        loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum()
        loss.backward()
        out.append((loss.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()
                                            if p.grad is not None}))
    return out


@pytest.mark.parametrize("case", sorted(LAYERS))
@pytest.mark.parametrize("natural_gradient", [True, False])
def test_fused_loop_equals_frame_by_frame(case, natural_gradient, monkeypatch):
    nnet = network(LAYERS[case])
    fused, stepped = NnetModule(copy.deepcopy(nnet)), NnetModule(copy.deepcopy(nnet), fuse_lstm=False)
    loops = [item for item in fused._order if not isinstance(item, str)]
    assert loops and all(loop.fast is not None for loop in loops)
    calls = []
    run = _Eval.run_fast_lstm
    monkeypatch.setattr(_Eval, "run_fast_lstm", lambda self, loop: calls.append(loop) or run(self, loop))
    feats = torch.randn(N, LEFT + WIDTH + RIGHT, 5, generator=torch.Generator().manual_seed(3))
    got, want = train_steps(fused, feats, natural_gradient=natural_gradient), \
        train_steps(stepped, feats, natural_gradient=natural_gradient)
    assert len(calls) == 3 * len(loops)
    for (loss, dx, grads), (loss0, dx0, grads0) in zip(got, want):
        torch.testing.assert_close(loss, loss0, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(dx, dx0, rtol=1e-4, atol=1e-5)
        assert grads.keys() == grads0.keys()
        for name in grads0:
            scale = grads0[name].abs().max().item() + 1e-6
            assert (grads[name] - grads0[name]).abs().max().item() <= 1e-4 * scale, name
    for (name, a), (_, b) in zip(fused.named_buffers(), stepped.named_buffers()):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_inference_equals_frame_by_frame():
    nnet = network(LAYERS["blstmp"])
    feats = torch.randn(N, LEFT + WIDTH + RIGHT, 5)
    with torch.no_grad():
        got = NnetModule(nnet).eval()(feats, LEFT, WIDTH)
        want = NnetModule(nnet, fuse_lstm=False).eval()(feats, LEFT, WIDTH)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [
    "lstm-layer name=l cell-dim=8",              # separate gate components: stepped node by node
    "lstmb-layer name=l cell-dim=8 bottleneck-dim=4",
    "fast-gru-layer name=l cell-dim=8",
])
def test_other_recurrences_are_stepped_node_by_node(layer):
    module = NnetModule(network(layer))
    loops = [item for item in module._order if not isinstance(item, str)]
    assert loops and all(loop.fast is None for loop in loops)


def test_natural_gradient_rows_skip_frames_without_derivatives():
    """Only the frames in [min-deriv-time, max-deriv-time] give natural-gradient rows: W_all's
    (the fused loop), and those of the affine layers computed for all frames at once."""
    nnet = network(LAYERS["lstmp"])
    module = NnetModule(nnet).train()
    seen = {}
    for name in ("l.W_all", "tdnn.affine", "output.affine"):
        preconditioner = module.op(name).preconditioners[0]

        def spy(x, name=name, precondition=preconditioner.precondition):
            seen[name] = x.shape[0]
            return precondition(x)
        preconditioner.precondition = spy
    feats = torch.randn(N, LEFT + WIDTH + RIGHT, 5)
    module(feats, LEFT, WIDTH, min_deriv_time=2, max_deriv_time=WIDTH - 1)[..., 0].sum().backward()
    assert seen == {name: N * (WIDTH - 2) for name in ("l.W_all", "tdnn.affine", "output.affine")}
    assert np.isfinite(module.op("l.W_all").linear_params.grad.numpy()).all()
