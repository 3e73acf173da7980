"""The three contracts every network family of tests/model/families.py keeps, each one test
parametrised over the families: the PyTorch executor (`NnetModule`, chunked as nnet3-compute
chunks) computes what the naive nnet3 evaluator (reference_nnet3.py) computes; training mode runs
forward and backward with finite gradients; the exported model round-trips byte-identically
through Kaldi's binary and text forms and computes what the network did. The family files keep
the family-specific tests."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.compute import compute_utterance
from kaldi_avg.model.graph import NnetModule

from .families import FAMILIES, Window
from .networks import executor_and_reference, exported_copy
from .reference_nnet3 import ReferenceNnet3

_NETWORKS = {}


def _network(name):
    """The family's network, built once for this module."""
    if name not in _NETWORKS:
        _NETWORKS[name] = FAMILIES[name].build()
    return _NETWORKS[name]


def _inputs(nnet, T, seed):
    dims = {n.name: n.dim for n in nnet.input_nodes()}
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(T, dims["input"])).astype(np.float32)
    ivector = rng.normal(size=dims["ivector"]).astype(np.float32) if "ivector" in dims else None
    return feats, ivector


def _run_id(run):
    if isinstance(run, Window):
        return f"{run.output}-l{run.left}-n{run.frames}"
    given = [("l", run.extra_left_context, 0), ("r", run.extra_right_context, 0),
             ("li", run.extra_left_context_initial, -1), ("rf", run.extra_right_context_final, -1)]
    return "-".join([f"c{run.frames_per_chunk}"] + [f"{k}{v}" for k, v, default in given if v != default])


EXECUTOR_CASES = [pytest.param(name, run, id=f"{name}-{_run_id(run)}")
                  for name, family in FAMILIES.items() for run in family.runs]
EXPORT_CASES = [pytest.param(name, binary, id=f"{name}-{'binary' if binary else 'text'}")
                for name, family in FAMILIES.items() for binary in family.export_binary]


@pytest.mark.parametrize("name, run", EXECUTOR_CASES)
def test_executor_equals_reference(name, run):
    family, nnet = FAMILIES[name], _network(name)
    feats, ivector = _inputs(nnet, family.frames, family.input_seed)
    if isinstance(run, Window):
        m = NnetModule(nnet, output=run.output).eval().double()
        with torch.no_grad():
            got = m(torch.from_numpy(feats).double()[None], left_context=run.left, num_frames=run.frames)[0].numpy()
        want = ReferenceNnet3(nnet, feats, -run.left).outputs(range(run.frames), run.output)
        assert got.shape == want.shape == (run.frames, nnet.output_dim(run.output))
    else:
        got, want = executor_and_reference(nnet, feats, run, ivector)
        assert got.shape == want.shape == (family.frames, nnet.output_dim("output"))
    assert np.isfinite(got).all()
    if family.peak is not None:
        assert np.abs(want).max() > family.peak
    scale = max(1.0, np.abs(want).max()) if family.relative else 1.0
    assert np.abs(got - want).max() < family.tol * scale


_LOSSES = {"sum": lambda out: out.sum(), "first": lambda out: out[..., 0].sum(),
           "square": lambda out: out.pow(2).sum(), "random": lambda out: (out * torch.randn_like(out)).sum()}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_and_backward_in_training(name):
    spec, nnet = FAMILIES[name].training, _network(name)
    m = NnetModule(nnet)
    m.train()
    left, right = model_context(nnet)
    left = left if spec.left is None else spec.left
    width = left + spec.frames + right if spec.width is None else spec.width
    dims = {n.name: n.dim for n in nnet.input_nodes()}
    torch.manual_seed(0)
    ivectors = torch.randn(2, dims["ivector"]) if "ivector" in dims else None
    deriv = {} if spec.min_deriv_time is None else {"min_deriv_time": spec.min_deriv_time}
    out = m(torch.randn(2, width, dims["input"]), left_context=left, num_frames=spec.frames, ivectors=ivectors,
            **deriv)
    _LOSSES[spec.loss](out).backward()
    grads = {n: p.grad for n, p in m.named_parameters() if not any(e in n for e in spec.exempt)}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    if spec.nonzero:
        assert all(g.abs().sum() > 0 for g in grads.values())
    for part in spec.reaches:
        reached = [g for n, g in grads.items() if part in n]
        assert reached and all(g.abs().sum() > 0 for g in reached), part


@pytest.mark.parametrize("name, binary", EXPORT_CASES)
def test_export_round_trips_byte_identically(name, binary):
    family, nnet, trans_model, priors = FAMILIES[name], _network(name), None, None
    if family.acoustic_model:   # a final.mdl: the network's output dim is the tree's
        experiment = pytest.importorskip("tests.train.experiment")
        trans_model = experiment.transition_model()
        nnet = family.build(num_pdfs=trans_model.num_pdfs)
        priors = np.random.default_rng(8).uniform(1, 2, trans_model.num_pdfs).astype(np.float32)
        priors /= priors.sum()
    again = exported_copy(nnet, binary, trans_model, priors)
    feats, ivector = _inputs(nnet, family.export_frames, seed=8)
    if family.export_opts is None:   # one test-mode forward over exactly the window
        left, right = model_context(nnet)
        x = torch.from_numpy(feats)[None]
        with torch.no_grad():
            before = NnetModule(nnet).eval()(x, left_context=left, num_frames=len(feats) - left - right).numpy()
            after = NnetModule(again).eval()(x, left_context=left, num_frames=len(feats) - left - right).numpy()
    else:
        opts = family.export_opts
        before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
        after = compute_utterance(NnetModule(again), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)
