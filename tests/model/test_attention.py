"""The attention layers built from tests/data/xconfig/small_attention, whose configs are Kaldi's
own: the executor equals the naive evaluator (optional window frames present or zero-padded at
the chunk edges), training runs with finite gradients and computes what test mode does, export
round-trips byte-identically; and on one component, the missing-frame rule of Kaldi's
attention.cc worked by hand (docs/kaldi-formats.md 4.24, 5.15)."""
import os

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from .networks import executor_and_reference, exported_copy, randomized, with_batchnorm_stats

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig", "small_attention")


@pytest.fixture(scope="module")
def nnet(tmp_path_factory):
    lda = tmp_path_factory.mktemp("attention") / "lda.mat"
    rows = np.random.default_rng(3).normal(0, 0.5, (21, 22))
    lda.write_text("[ " + "\n".join(" ".join(map(str, r)) for r in rows) + " ]")
    with open(os.path.join(FIXTURE, "network.xconfig")) as f:
        nnet = randomized(build_nnet(f.read(), "small_attention.xconfig", lda_mat=str(lda)), seed=5, scale=0.3)
    with_batchnorm_stats(nnet, seed=6)
    return nnet


def _inputs(T, seed=7):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(T, 6)).astype(np.float32), rng.normal(size=3).astype(np.float32)


def test_context_counts_only_the_required_window_frames(nnet):
    """lda +-1; attention1 2 left and 1 right at stride 2; attention2 1 right; attention3 1 left;
    attention4 none (its window frames are all optional)."""
    assert model_context(nnet) == (1 + 4 + 1, 1 + 2 + 1)


@pytest.mark.parametrize("opts", [ChunkOptions(frames_per_chunk=1000),
                                  ChunkOptions(frames_per_chunk=5),
                                  ChunkOptions(frames_per_chunk=6, extra_left_context=4, extra_right_context=2)])
def test_executor_equals_reference(nnet, opts):
    feats, ivector = _inputs(19)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert np.abs(got - want).max() < 1e-5


def test_forward_and_backward_in_training(nnet):
    m = NnetModule(nnet)
    m.train()
    out = m(torch.randn(2, 30, 6), left_context=6, num_frames=20, ivectors=torch.randn(2, 3))
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_training_and_test_mode_attend_alike(nnet):
    op = NnetModule(nnet).op("attention1.attention")
    x = torch.randn(3, 4, op.component.context_dim * op.component.input_dim())
    assert torch.equal(op.train()(x), op.eval()(x))


def test_missing_optional_frame_is_a_zero_row_in_the_softmax():
    """One head, key and value dim 1, window (t-1, t), only t required: at the first frame the
    frame before does not exist, so its key and value are 0 and its score is its position term
    s_0 alone: weights softmax(s_0, s_1 + key-scale r k_t)."""
    nnet = Nnet.from_config("\n".join([
        "input-node name=input dim=5",
        "component name=att type=RestrictedAttentionComponent key-dim=1 value-dim=1 num-left-inputs=1 "
        "num-right-inputs=0 num-left-inputs-required=0 key-scale=0.5",
        "component-node name=att component=att input=input",
        "output-node name=output input=att"]) + "\n")
    k, v, r, s0, s1 = 2.0, 3.0, 1.5, 0.25, -0.5
    feats = torch.tensor([[[k, v, r, s0, s1]]])
    got = NnetModule(nnet)(feats, left_context=0, num_frames=1)[0, 0]
    w = torch.softmax(torch.tensor([s0, s1 + 0.5 * r * k]), 0)
    assert torch.allclose(got, torch.tensor([w[1] * v, w[0], w[1]]))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(nnet, binary):
    again_nnet = exported_copy(nnet, binary)
    feats, ivector = _inputs(12, seed=8)
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=2)
    before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    after = compute_utterance(NnetModule(again_nnet), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)
