"""The CNN layers (conv-*-layer, res-block, channel-average-layer) built from
tests/data/xconfig/small_cnn, whose configs are Kaldi's own: the model context follows the
required time offsets, the executor equals the naive evaluator (zero padding in height, and in
time where a time offset is optional), training runs with the convolution's natural gradient,
export round-trips byte-identically (docs/kaldi-formats.md 4.23, 5.14)."""
import os

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from .networks import executor_and_reference, exported_copy, randomized, with_batchnorm_stats

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig", "small_cnn")


@pytest.fixture(scope="module")
def nnet():
    with open(os.path.join(FIXTURE, "network.xconfig")) as f:
        nnet = randomized(build_nnet(f.read(), "small_cnn.xconfig"), seed=5, scale=0.3)
    with_batchnorm_stats(nnet, seed=6)
    return nnet


def _inputs(T, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, 12)).astype(np.float32), rng.normal(size=10).astype(np.float32)


def test_context_counts_only_required_time_offsets(nnet):
    """cnn1 (-1,0,1), cnn2 (-1,0,1), cnn3 (-3,0,3), res6 without zero padding (-2,0,2 twice...
    once: its middle conv), cnn10 (-1,0) and cnn11 (0,1), the average (-2,0,2); conv4 and the
    zero-padded res-blocks require only offset 0."""
    assert model_context(nnet) == (1 + 1 + 3 + 2 + 1 + 2, 1 + 1 + 3 + 2 + 1 + 2)


@pytest.mark.parametrize("opts", [ChunkOptions(frames_per_chunk=1000),
                                  ChunkOptions(frames_per_chunk=7, extra_left_context=3),
                                  ChunkOptions(frames_per_chunk=4, extra_left_context=2, extra_right_context=1)],
                         ids=["whole", "chunks", "chunks-right"])
def test_executor_equals_reference(nnet, opts):
    feats, ivector = _inputs(23)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert got.shape == want.shape == (23, 7) and np.abs(want).max() > 1e-2
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


def test_forward_and_backward_in_training_with_natural_gradient(nnet):
    """The convolutions' gradients are their natural-gradient directions (the derivative of
    [W | b] preconditioned on both sides), which keep to a descent direction."""
    x, iv = torch.randn(3, 40, 12), torch.randn(3, 10)
    grads = {}
    for natural in (False, True):
        torch.manual_seed(0)   # the same dropout masks
        m = NnetModule(nnet)
        m.train()
        m.set_natural_gradient(natural)
        out = m(x, left_context=10, num_frames=20, ivectors=iv)
        out.pow(2).sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
        grads[natural] = {k.removeprefix("ops."): p.grad.clone() for k, p in m.named_parameters()}
    def params_of(natural, conv):   # [W | b], the matrix Kaldi preconditions
        return torch.cat([grads[natural][f"{conv}.linear_params"].flatten(),
                          grads[natural][f"{conv}.bias_params"]])

    convs = [c.replace(".", ":") for c, comp in nnet.components.items()
             if comp.type_name == "TimeHeightConvolutionComponent"]
    assert len(convs) == 18
    for conv in convs:
        plain, natural = params_of(False, conv), params_of(True, conv)
        if conv.startswith("res8:"):   # use-natural-gradient=false
            assert torch.equal(plain, natural)
        else:   # preconditioned by positive definite matrices on both sides
            assert not torch.allclose(plain, natural) and torch.dot(plain, natural) > 0


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(nnet, binary):
    again_nnet = exported_copy(nnet, binary)
    feats, ivector = _inputs(15, seed=8)
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=2)
    before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    after = compute_utterance(NnetModule(again_nnet), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)
