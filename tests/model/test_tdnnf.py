"""TDNN-F networks (tdnnf-layer, prefinal-layer, the dropout/so variants of the ReLU layers, the
single-component layers) built from an xconfig whose configs are Kaldi's own
(tests/data/xconfig/small_tdnnf): the executor equals the naive evaluator, training runs,
export round-trips byte-identically."""
import os

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from .networks import executor_and_reference, exported_copy, randomized, with_batchnorm_stats

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig", "small_tdnnf", "network.xconfig")


@pytest.fixture(scope="module")
def nnet():
    with open(FIXTURE) as f:
        text = f.read()
    nnet = randomized(build_nnet(text, "small_tdnnf.xconfig", which="ref"), seed=5, scale=0.2)
    with_batchnorm_stats(nnet, seed=6)
    return nnet


def _inputs(T, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, 4)).astype(np.float32), rng.normal(size=3).astype(np.float32)


def test_context_counts_the_tdnn_time_offsets(nnet):
    # lda +-1; tdnnf2 (-1,0)(0,1); tdnnf4 shift-left (-3,0)(-3,0); tdnnf5 left-only (-2,0)(0)
    assert model_context(nnet) == (10, 2)


@pytest.mark.parametrize("opts", [ChunkOptions(frames_per_chunk=1000),
                                  ChunkOptions(frames_per_chunk=6, extra_left_context=3)])
def test_executor_equals_reference(nnet, opts):
    feats, ivector = _inputs(21)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert np.abs(got - want).max() < 1e-5


def test_forward_and_backward_in_training(nnet):
    m = NnetModule(nnet)
    m.train()
    out = m(torch.randn(2, 30, 4), left_context=10, num_frames=15, ivectors=torch.randn(2, 3))
    out.sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
               for n, g in grads.items() if "xent" not in n)
    assert "ops.tdnnf2-linear.bias_params" not in grads   # use-bias=false


def test_general_dropout_masks_are_shared_across_time(nnet):
    """dropout-per-dim: one mask row per sequence; continuous: scales in [1-2p, 1+2p]."""
    m = NnetModule(nnet)
    m.train()
    op = m.op("tdnnf2.dropout")
    op.component.dropout_proportion = 0.25
    try:
        x = torch.ones(3, 8, 12)
        y = op(x, torch.arange(8))
    finally:
        op.component.dropout_proportion = 0.0
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert not torch.equal(y[0], y[1])
    assert y.min() >= 0.5 and y.max() <= 1.5


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(nnet, binary):
    again_nnet = exported_copy(nnet, binary)
    feats, ivector = _inputs(12, seed=8)
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=2)
    before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    after = compute_utterance(NnetModule(again_nnet), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)
