"""GRU networks built from xconfigs whose configs are Kaldi's own: small_tdnn_opgru (opgru-layer,
norm-opgru-layer and their fast- variants with an OutputGruNonlinearityComponent; forward and
backward recurrences, gate dropout) and small_gru_lstmb (gru, pgru and their fast-/norm-
variants with a GruNonlinearityComponent, and lstmb-layer). The executor equals the naive
evaluator, training runs with Kaldi's natural gradient for W^h, export round-trips
byte-identically. The GruNonlinearityComponent op is also checked on its own."""
import os

import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.components import GruNonlinearityComponent
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp

from .networks import executor_and_reference, exported_copy, randomized, with_batchnorm_stats
from .reference_nnet3 import _component

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig")


def _build(case: str):
    with open(os.path.join(FIXTURES, case, "network.xconfig")) as f:
        text = f.read()
    nnet = randomized(build_nnet(text, f"{case}.xconfig", which="ref"), seed=5, scale=0.4)
    with_batchnorm_stats(nnet, seed=6)
    return nnet


# lda +-1; small_tdnn_opgru: tdnn2 +-1, tdnn3 +-3, and its output delay of 2 moves 2 frames
# from left to right. The recurrences add no model context.
CONTEXTS = {"small_tdnn_opgru": (3, 7), "small_gru_lstmb": (1, 1)}


@pytest.fixture(scope="module", params=sorted(CONTEXTS))
def case(request):
    return request.param


@pytest.fixture(scope="module")
def nnet(case):
    return _build(case)


def _inputs(nnet, T, seed=7):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(T, 4)).astype(np.float32)
    ivector = rng.normal(size=3).astype(np.float32) if nnet.has_node("ivector") else None
    return feats, ivector


def test_recurrences_add_no_model_context(case, nnet):
    assert model_context(nnet) == CONTEXTS[case]


@pytest.mark.parametrize("opts", [ChunkOptions(frames_per_chunk=1000),
                                  ChunkOptions(frames_per_chunk=7, extra_left_context=4,
                                               extra_right_context=3)])
def test_executor_equals_reference(nnet, opts):
    feats, ivector = _inputs(nnet, 23)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert np.abs(got - want).max() < 1e-5


def test_forward_and_backward_in_training(nnet):
    m = NnetModule(nnet)
    m.train()
    left, right = model_context(nnet)
    ivectors = torch.randn(2, 3) if nnet.has_node("ivector") else None
    out = m(torch.randn(2, 16 + left + right, 4), left_context=left, num_frames=16,
            ivectors=ivectors)
    out.sum().backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert any("gru_nonlin" in n for n in grads)
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
               for n, g in grads.items() if "xent" not in n)


def _w_h_gradients(nnet, natural: bool, seed: int = 0) -> dict:
    torch.manual_seed(seed)   # the same dropout masks
    m = NnetModule(nnet)
    m.train()
    m.set_natural_gradient(natural)
    left, right = model_context(nnet)
    ivectors = torch.randn(2, 3) if nnet.has_node("ivector") else None
    out = m(torch.randn(2, 16 + left + right, 4), left_context=left, num_frames=16, ivectors=ivectors)
    (out * torch.randn_like(out)).sum().backward()
    return {name: m.op(name) for name, c in nnet.components.items() if c.type_name.endswith("GruNonlinearityComponent")}


def test_w_h_gets_kaldis_natural_gradient_and_tanh_statistics(nnet):
    """W^h's update direction is the natural gradient of its consolidated rows (Kaldi's
    UpdateParameters: [r * s_{t-1}] and the tanh argument's derivative, or for OutputGru the
    per-frame products), positive definite preconditioning of the plain gradient; the tanh
    statistics of the rows are stored on about half of the minibatches."""
    plain, natural = _w_h_gradients(nnet, False), _w_h_gradients(nnet, True)
    assert plain
    for name in plain:
        g, ng = plain[name].w_h.grad.flatten(), natural[name].w_h.grad.flatten()
        assert not torch.allclose(g, ng) and torch.dot(g, ng) > 0, name
        assert float(plain[name].act_count) == 0.0   # plain gradient: no consolidated update
    stored = 0
    for seed in range(20):
        op = next(iter(_w_h_gradients(nnet, True, seed).values()))
        stored += float(op.act_count) > 0
        h = op.act_value_sum / max(float(op.act_count), 1.0)
        assert (h.abs() <= 1).all()   # averages of tanh values
    assert 4 <= stored <= 16


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "text"])
def test_export_round_trips_byte_identically(nnet, binary):
    again_nnet = exported_copy(nnet, binary)
    feats, ivector = _inputs(nnet, 12, seed=8)
    opts = ChunkOptions(frames_per_chunk=5, extra_left_context=2)
    before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    after = compute_utterance(NnetModule(again_nnet), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)


@pytest.mark.parametrize("cell_dim, recurrent_dim", [(5, 2), (4, 4)], ids=["projected", "plain"])
def test_gru_nonlinearity_equals_reference(cell_dim, recurrent_dim):
    rng = np.random.default_rng(3)
    comp = GruNonlinearityComponent(cell_dim=cell_dim, recurrent_dim=recurrent_dim,
                                    w_h=rng.normal(size=(cell_dim, recurrent_dim)))
    x = rng.normal(size=(6, comp.input_dim())).astype(np.float32)
    got = ComponentOp(comp)(torch.from_numpy(x)).detach().numpy()
    want = np.stack([_component(comp, row) for row in x])
    assert got.shape == (6, 2 * cell_dim) and np.abs(got - want).max() < 1e-5
