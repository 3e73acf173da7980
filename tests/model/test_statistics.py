"""Statistics pooling (stats-layer; docs/kaldi-formats.md 4.25, 5.16) on
tests/data/xconfig/small_xvector, whose configs are Kaldi's own (an x-vector network, plus a
moving-window mean branch with input and stats periods feeding `output-sad`), and on a network
with both kinds of log-count features (families.STATS_COUNTS): the model context is Kaldi's, a
pooled context ends mid-block, and the ops' derivatives are those of Kaldi's Backprop. (The
executor against the naive evaluator, in float64, forward and backward, export:
test_contracts.py.)"""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.components import StatisticsExtractionComponent, StatisticsPoolingComponent
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp

from .families import module_fixtures
from .networks import randomized, with_batchnorm_stats
from .reference_nnet3 import ReferenceNnet3, reference_context

# Kaldi's context (ComputeSimpleNnetContext, docs/kaldi-formats.md 3.6): output requested on a
# window of input frames, for each shift modulo the network's modulus.
# small_xvector: tdnn3 needs input t-4..t+4; a pooled output at t needs only one tdnn3 frame in
# t..t+60 (IsComputable: one input of the window exists), so every output from the window's first
# frame to its last but 4 is computable: (0, 4), as for Kaldi's x-vector recipes (0, 7).
# stats-counts: tdnn1@-2 needs input t-3..t-1; Round(tdnn1, 3) at t+2 reads tdnn1 at t..t+2, +1
# for its splice: right 3 at the worst phase; the pooled statistics reach past the window: (3, 3).
CONTEXTS = {"small_xvector": (0, 4), "stats-counts": (3, 3)}

case, nnet = module_fixtures(*sorted(CONTEXTS))


def _feats(nnet, T, seed=7):
    return np.random.default_rng(seed).normal(size=(T, nnet.input_dim())).astype(np.float32)


def test_model_context_is_kaldis(case, nnet):
    assert model_context(nnet) == reference_context(nnet) == CONTEXTS[case]
    # Nnet::Modulus: the lcm of the Round periods (small_xvector 1 and 6; counts 6, 2 and 3).
    assert "modulus: 6\n" in nnet.info()


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
