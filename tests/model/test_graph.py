"""The PyTorch executor on the docs/kaldi-formats.md 5.10 network (the spec-lstm family of
tests/model/families.py): its context, batched utterances and chunks against the naive
evaluator, write-back, the errors. (The executor against the naive evaluator for every family,
forward and backward, export: test_contracts.py.)"""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterances
from kaldi_avg.model.graph import NnetModule

from .families import module_fixtures
from .networks import spec_5_10_config
from .reference_nnet3 import reference_chunked

case, nnet = module_fixtures("spec-lstm")


def test_context_of_spec_network(nnet):
    assert model_context(nnet) == (0, 3)
    assert nnet.num_parameters() == 878


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


def test_write_back_copies_the_trained_tensors(nnet):
    m = NnetModule(nnet)
    m.train()
    with torch.no_grad():
        m.op("output.affine").bias_params.add_(1.0)
    before = nnet.components["output.affine"].bias_params.copy()
    m.write_back()
    assert np.allclose(nnet.components["output.affine"].bias_params, before + 1.0)


def test_recurrence_without_ifdefined_is_rejected():
    bad = spec_5_10_config().replace("IfDefined(Offset(lstm1.r_trunc, -1))", "Offset(lstm1.r_trunc, -1)")
    with pytest.raises(Exception, match="IfDefined|ComputeSimpleNnetContext"):
        NnetModule(Nnet.from_config(bad))


def test_component_names_that_differ_only_in_dot_and_dash_are_distinct_modules():
    """A layer's `a.batchnorm` beside a `batchnorm-component name=a-batchnorm` (swbd run_tdnn_7o)."""
    from kaldi_avg.model.build import build_nnet
    nnet = build_nnet("input dim=4 name=input\nrelu-batchnorm-layer name=a dim=6\n"
                      "batchnorm-component name=a-batchnorm\noutput-layer name=output dim=3\n", "x")
    m = NnetModule(nnet)
    assert m.op("a.batchnorm") is not m.op("a-batchnorm")
