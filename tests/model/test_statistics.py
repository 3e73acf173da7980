"""Statistics pooling (stats-layer; docs/kaldi-formats.md 4.25, 5.16) on
tests/data/xconfig/small_xvector, whose configs are Kaldi's own (an x-vector network, plus a
moving-window mean branch with input and stats periods feeding `output-sad`), and on a network
with both kinds of log-count features: the model context is Kaldi's, the executor equals the
naive evaluator, training runs with finite gradients, export round-trips byte-identically, and
the ops' derivatives are those of Kaldi's Backprop."""
import os

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.components import StatisticsExtractionComponent, StatisticsPoolingComponent
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp

from .networks import exported_copy, randomized, with_batchnorm_stats
from .reference_nnet3 import ReferenceNnet3, reference_context

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig", "small_xvector", "network.xconfig")

# mean+count and mean+stddev+count with periods; the Round(tdnn1, 3) read 2 frames ahead makes the
# right context depend on the frame's phase modulo 3 (network modulus 6).
COUNTS_XCONFIG = """input dim=4 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=6
stats-layer name=mean-count config=mean+count(-6:3:6:12)
stats-layer name=all config=mean+stddev+count(-4:2:2:4) input=tdnn1
relu-batchnorm-layer name=tdnn2 input=Append(tdnn1@-2, Offset(Round(tdnn1, 3), 2), mean-count, all) dim=6
output-layer name=output dim=3
"""

# Kaldi's context (ComputeSimpleNnetContext, docs/kaldi-formats.md 3.6): output requested on a
# window of input frames, for each shift modulo the network's modulus.
# small_xvector: tdnn3 needs input t-4..t+4; a pooled output at t needs only one tdnn3 frame in
# t..t+60 (IsComputable: one input of the window exists), so every output from the window's first
# frame to its last but 4 is computable: (0, 4), as for Kaldi's x-vector recipes (0, 7).
# counts: tdnn1@-2 needs input t-3..t-1; Round(tdnn1, 3) at t+2 reads tdnn1 at t..t+2, +1 for its
# splice: right 3 at the worst phase; the pooled statistics reach past the window: (3, 3).
CONTEXTS = {"small_xvector": (0, 4), "counts": (3, 3)}
# Output nodes and the chunk that checks them: (left context given, output frames).
OUTPUTS = {"small_xvector": {"output": (3, 20), "output-sad": (9, 20)}, "counts": {"output": (5, 20)}}


def _build(case: str):
    if case == "counts":
        text = COUNTS_XCONFIG
    else:
        with open(FIXTURE) as f:
            text = f.read()
    nnet = randomized(build_nnet(text, f"{case}.xconfig", which="ref"), seed=5, scale=0.3)
    with_batchnorm_stats(nnet, seed=6)
    return nnet


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def case(request):
    return request.param


@pytest.fixture(scope="module")
def nnet(case):
    return _build(case)


def _feats(nnet, T, seed=7):
    return np.random.default_rng(seed).normal(size=(T, nnet.input_dim())).astype(np.float32)


def test_model_context_is_kaldis(case, nnet):
    assert model_context(nnet) == reference_context(nnet) == CONTEXTS[case]
    # Nnet::Modulus: the lcm of the Round periods (small_xvector 1 and 6; counts 6, 2 and 3).
    assert "modulus: 6\n" in nnet.info()


def test_executor_equals_reference(case, nnet):
    """In float64: in float32 (as in Kaldi) mean(x^2) - mean^2 loses digits where a window's
    values are nearly equal (its last frames pool a single frame)."""
    feats = _feats(nnet, 40)
    for output, (left, frames) in OUTPUTS[case].items():
        m = NnetModule(nnet, output=output).eval().double()
        with torch.no_grad():
            got = m(torch.from_numpy(feats).double()[None], left_context=left, num_frames=frames)[0].numpy()
        want = ReferenceNnet3(nnet, feats, -left).outputs(range(frames), output)
        assert np.abs(got - want).max() < 1e-6, output


def test_forward_and_backward_in_training(nnet):
    m = NnetModule(nnet)
    m.train()
    left, right = model_context(nnet)
    out = m(torch.randn(2, left + 16 + right, nnet.input_dim()), left_context=left, num_frames=16)
    (out * torch.randn_like(out)).sum().backward()
    # Every layer before and after the pooling gets a derivative (not output-sad's branch).
    grads = {n: p.grad for n, p in m.named_parameters() if "sad" not in n}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())


# Statistics inside a frame-level acoustic model (as the SAD recipes' `stats-layer ... input=tdnn1`
# beside the frame-level layers): the extraction block of the last frames runs past the input.
SAD_XCONFIG = """input dim=4 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=6
stats-layer name=tdnn1_stats config=mean+count(-12:1:3:12)
relu-batchnorm-layer name=tdnn2 input=Append(tdnn1, tdnn1_stats) dim=6
output-layer name=output dim=3
"""


@pytest.mark.parametrize("frames", [16, 17, 18])
def test_pooled_context_ends_mid_block(frames):
    """The input is exactly the model context around `frames` outputs (as a training chunk is);
    every phase of the last extraction block against the input's end."""
    nnet = with_batchnorm_stats(randomized(build_nnet(SAD_XCONFIG, "sad.xconfig", which="ref"), seed=5, scale=0.3))
    left, right = model_context(nnet)
    assert (left, right) == reference_context(nnet) == (1, 1)
    feats = _feats(nnet, left + frames + right)
    m = NnetModule(nnet).eval().double()
    with torch.no_grad():
        got = m(torch.from_numpy(feats).double()[None], left_context=left, num_frames=frames)[0].numpy()
    want = ReferenceNnet3(nnet, feats, -left).outputs(range(frames))
    assert np.abs(got - want).max() < 1e-6


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(nnet, binary):
    again = exported_copy(nnet, binary)
    feats = torch.from_numpy(_feats(nnet, 30, seed=8))[None]
    left, right = model_context(nnet)
    with torch.no_grad():
        before = NnetModule(nnet).eval()(feats, left_context=left, num_frames=30 - left - right)
        after = NnetModule(again).eval()(feats, left_context=left, num_frames=30 - left - right)
    assert torch.equal(before, after)


# -- the ops' derivatives against Kaldi's Backprop, transcribed ----------------------------------

def _kaldi_backprop(x, times, out_times, extraction, pooling, out_value, out_deriv):
    """StatisticsPoolingComponent::Backprop then StatisticsExtractionComponent::Backprop (period 1):
    the stddev's derivative taken at the floored value, the count held constant."""
    D, k = x.shape[1], pooling.num_log_count_features
    d = out_deriv.astype(np.float64).copy()
    if pooling.output_stddevs:
        mean, stddev = out_value[:, k:k + D], out_value[:, k + D:]
        d[:, k + D:] *= 0.5 / stddev
        d[:, k:k + D] += -2.0 * mean * d[:, k + D:]
    windows = [[i for i, u in enumerate(times) if t - pooling.left_context <= u <= t + pooling.right_context]
               for t in out_times]
    d /= np.array([len(w) for w in windows], dtype=np.float64)[:, None]
    stats_deriv = np.zeros((len(times), 2 * D))
    for o, w in enumerate(windows):
        stats_deriv[w] += d[o, k:]
    return stats_deriv[:, :D] + 2.0 * x * stats_deriv[:, D:]


def test_op_derivatives_are_kaldis_backprop():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(12, 3))
    x[:, 2] = 0.5 + 0.01 * rng.normal(size=12)   # a variance below the floor
    extraction = StatisticsExtractionComponent(in_dim=3, input_period=1, output_period=1, include_variance=True)
    pooling = StatisticsPoolingComponent(in_dim=7, input_period=1, left_context=2, right_context=3,
                                         num_log_count_features=1, output_stddevs=True, variance_floor=0.01)
    times, out_times = torch.arange(12), torch.arange(-3, 14)
    xt = torch.tensor(x, requires_grad=True)
    ops = ComponentOp(extraction).double(), ComponentOp(pooling).double()
    out = ops[1](ops[0](xt[None], times), times, out_times=out_times)[0]
    assert np.allclose(out[:, 6].detach().numpy(), 0.1)   # [log count, 3 means, 3 stddevs]: sqrt(floor)
    g = rng.normal(size=tuple(out.shape))
    (out * torch.tensor(g)).sum().backward()
    want = _kaldi_backprop(x, times.numpy(), out_times.numpy(), extraction, pooling, out.detach().numpy(), g)
    assert np.allclose(xt.grad.numpy(), want, rtol=1e-10, atol=1e-12)
    for op in ops:
        op.eval()
    assert torch.equal(ops[1](ops[0](xt[None], times), times, out_times=out_times)[0], out)
