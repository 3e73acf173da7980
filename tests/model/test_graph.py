"""The PyTorch executor computes what nnet3 computes (checked against a naive evaluator)."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterances
from kaldi_avg.model.graph import NnetModule

from .networks import executor_and_reference, randomized, spec_5_10_config
from .reference_nnet3 import reference_chunked


@pytest.fixture(scope="module")
def nnet():
    return randomized(Nnet.from_config(spec_5_10_config()))


def test_context_of_spec_network(nnet):
    assert model_context(nnet) == (0, 3)
    assert nnet.num_parameters() == 878


@pytest.mark.parametrize("opts", [ChunkOptions(frames_per_chunk=1000),
                                  ChunkOptions(frames_per_chunk=5, extra_left_context=3),
                                  ChunkOptions(frames_per_chunk=7, extra_left_context=4,
                                               extra_left_context_initial=0)])
def test_executor_equals_reference(nnet, opts):
    feats = np.random.default_rng(1).normal(size=(23, 4)).astype(np.float32)
    got, want = executor_and_reference(nnet, feats, opts)
    assert np.abs(got - want).max() < 1e-5


def test_utterances_batched_together_equal_the_reference(nnet):
    rng = np.random.default_rng(2)
    utts = [(f"u{k}", rng.normal(size=(n, 4)).astype(np.float32), None) for k, n in enumerate((23, 5, 14, 23, 1))]
    opts = ChunkOptions(frames_per_chunk=7, extra_left_context=4, extra_left_context_initial=0)
    log_priors = rng.normal(size=nnet.output_dim("output")).astype(np.float32)
    got = list(compute_utterances(NnetModule(nnet), iter(utts), opts, model_context(nnet), log_priors,
                                  utterances_per_batch=2))
    assert [k for k, _ in got] == [k for k, _, _ in utts]
    for (_, feats, _), (_, out) in zip(utts, got):
        assert np.abs(out - (reference_chunked(nnet, feats, opts) - log_priors)).max() < 1e-5


def test_batch_of_chunks_equals_one_at_a_time(nnet):
    m = NnetModule(nnet)
    x = torch.randn(3, 30, 4)
    batched = m(x, left_context=10, num_frames=17)
    single = torch.cat([m(x[i:i + 1], left_context=10, num_frames=17) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6)


def test_not_enough_context_is_an_error(nnet):
    with pytest.raises(ValueError, match="cannot produce output"):
        NnetModule(nnet)(torch.randn(1, 10, 4), left_context=0, num_frames=10)


def test_gradients_flow_and_write_back(nnet):
    m = NnetModule(nnet)
    m.train()
    out = m(torch.randn(2, 20, 4), left_context=4, num_frames=10, min_deriv_time=-2)
    out[..., 0].sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    with torch.no_grad():
        m.op("output.affine").bias_params.add_(1.0)
    before = nnet.components["output.affine"].bias_params.copy()
    m.write_back()
    assert np.allclose(nnet.components["output.affine"].bias_params, before + 1.0)


def test_recurrence_without_ifdefined_is_rejected():
    bad = spec_5_10_config().replace("IfDefined(Offset(lstm1.r_trunc, -1))", "Offset(lstm1.r_trunc, -1)")
    with pytest.raises(Exception, match="IfDefined|ComputeSimpleNnetContext"):
        NnetModule(Nnet.from_config(bad))


XCONFIG_LAYERS = """input dim=5 name=ivector
input dim=4 name=input
fixed-affine-layer name=lda input=Append(-1,0,1,ReplaceIndex(ivector, t, 0)) affine-transform-file=unused.mat
relu-batchnorm-layer name=tdnn1 dim=12
lstmp-layer name=lstm1 cell-dim=8 recurrent-projection-dim=3 non-recurrent-projection-dim=2 delay=-1 decay-time=10
fast-lstm-layer name=lstm2 cell-dim=6 delay=-2
output-layer name=output output-delay=3 dim=7
"""


def test_xconfig_layer_zoo_equals_reference():
    """ivector via ReplaceIndex, relu-batchnorm (test mode), lstmp-layer's separate components."""
    from kaldi_avg.model.build import build_nnet
    nnet = randomized(build_nnet(XCONFIG_LAYERS, "zoo.xconfig", which="ref"), seed=3)
    bn = nnet.components["tdnn1.batchnorm"]
    rng = np.random.default_rng(4)
    bn.set_stats(100.0, rng.normal(0, 1, bn.block_dim), rng.uniform(0.5, 2, bn.block_dim))
    feats = rng.normal(size=(19, 4)).astype(np.float32)
    ivector = rng.normal(size=5).astype(np.float32)
    opts = ChunkOptions(frames_per_chunk=6, extra_left_context=2)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert np.abs(got - want).max() < 1e-5


def test_component_names_that_differ_only_in_dot_and_dash_are_distinct_modules():
    """A layer's `a.batchnorm` beside a `batchnorm-component name=a-batchnorm` (swbd run_tdnn_7o)."""
    from kaldi_avg.model.build import build_nnet
    nnet = build_nnet("input dim=4 name=input\nrelu-batchnorm-layer name=a dim=6\n"
                      "batchnorm-component name=a-batchnorm\noutput-layer name=output dim=3\n", "x")
    m = NnetModule(nnet)
    assert m.op("a.batchnorm") is not m.op("a-batchnorm")
