"""GRU networks built from xconfigs whose configs are Kaldi's own: small_tdnn_opgru (opgru-layer,
norm-opgru-layer and their fast- variants with an OutputGruNonlinearityComponent; forward and
backward recurrences, gate dropout) and small_gru_lstmb (gru, pgru and their fast-/norm-
variants with a GruNonlinearityComponent, and lstmb-layer). Training runs with Kaldi's natural
gradient for W^h; the GruNonlinearityComponent op is also checked on its own. (The executor
against the naive evaluator, forward and backward, export: test_contracts.py.)"""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.nnet3.components import GruNonlinearityComponent
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp

from .families import module_fixtures
from .reference_nnet3 import _component

# lda +-1; small_tdnn_opgru: tdnn2 +-1, tdnn3 +-3, and its output delay of 2 moves 2 frames
# from left to right. The recurrences add no model context.
CONTEXTS = {"small_tdnn_opgru": (3, 7), "small_gru_lstmb": (1, 1)}

case, nnet = module_fixtures(*sorted(CONTEXTS))


def test_recurrences_add_no_model_context(case, nnet):
    assert model_context(nnet) == CONTEXTS[case]


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


@pytest.mark.parametrize("cell_dim, recurrent_dim", [(5, 2), (4, 4)], ids=["projected", "plain"])
def test_gru_nonlinearity_equals_reference(cell_dim, recurrent_dim):
    rng = np.random.default_rng(3)
    comp = GruNonlinearityComponent(cell_dim=cell_dim, recurrent_dim=recurrent_dim,
                                    w_h=rng.normal(size=(cell_dim, recurrent_dim)))
    x = rng.normal(size=(6, comp.input_dim())).astype(np.float32)
    got = ComponentOp(comp)(torch.from_numpy(x)).detach().numpy()
    want = np.stack([_component(comp, row) for row in x])
    assert got.shape == (6, 2 * cell_dim) and np.abs(got - want).max() < 1e-5
