"""Kaldi's LSTM dropout in PyTorch: fast-lstmp-layer's DropoutMaskComponent (per-frame 0/1 scales
of the input, forget and output gates, not rescaled; 1 - p in test mode) and nnet3-copy's
set-dropout-proportion edit."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.binary import KaldiReader
from kaldi_avg.kaldi.nnet3.components import DropoutComponent, DropoutMaskComponent
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.model.ops import ComponentOp

from .networks import randomized
from .reference_nnet3 import ReferenceNnet3


def xconfig(dropout: str = "") -> str:
    return f"""input dim=5 name=input
relu-layer name=tdnn1 input=Append(-1,0,1) dim=8
fast-lstmp-layer name=lstm1 cell-dim=6 recurrent-projection-dim=3 non-recurrent-projection-dim=2 delay=-1 {dropout}
fast-lstmp-layer name=lstm2 cell-dim=4 recurrent-projection-dim=2 non-recurrent-projection-dim=2 delay=-2 {dropout}
output-layer name=output output-delay=1 dim=7
"""


def network(dropout: str = "") -> Nnet:
    return randomized(build_nnet(xconfig(dropout), "dropout.xconfig", seed=1), seed=2)


def run(module: NnetModule, feats: np.ndarray, train: bool, seed: int = 0) -> np.ndarray:
    left, right = model_context(module.nnet)
    torch.manual_seed(seed)
    module.train(train)
    with torch.no_grad():
        out = module(torch.from_numpy(feats)[None], left_context=left, num_frames=len(feats) - left - right)
    return out[0].numpy()


def reference(nnet: Nnet, feats: np.ndarray) -> np.ndarray:
    left, right = model_context(nnet)
    return ReferenceNnet3(nnet, feats, -left).outputs(range(len(feats) - left - right))


@pytest.fixture(scope="module")
def feats():
    return np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)


def test_dropout_network_has_the_context_of_the_plain_one():
    assert model_context(network("dropout-proportion=0.2")) == model_context(network())


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5])
def test_test_mode_scales_the_gates_by_one_minus_p(p, feats):
    """Eval mode equals the naive evaluator with the three gate scales set to 1 - p by hand."""
    nnet = network(f"dropout-proportion={p}")
    np.testing.assert_allclose(run(NnetModule(nnet), feats, train=False), reference(nnet, feats),
                               rtol=1e-4, atol=1e-5)


def test_proportion_zero_is_the_network_without_dropout(feats):
    with_mask, plain = NnetModule(network("dropout-proportion=0.0")), NnetModule(network())
    plain.load_state_dict(with_mask.state_dict())   # the mask component has no tensors
    for train in (False, True):
        np.testing.assert_array_equal(run(with_mask, feats, train), run(plain, feats, train))


def test_training_draws_masks_reproducibly_from_the_torch_seed(feats):
    module = NnetModule(network("dropout-proportion=0.3"))
    a, b, c = run(module, feats, True, seed=5), run(module, feats, True, seed=5), run(module, feats, True, seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, run(module, feats, train=False))


def mask_op(**kw) -> ComponentOp:
    return ComponentOp(DropoutMaskComponent(dim=3, **kw))


def test_training_masks_are_0_or_1_at_the_rate_p():
    p = 0.2
    masks = mask_op(dropout_proportion=p).train()(torch.zeros(400, 100, 0))
    assert masks.shape == (400, 100, 3) and set(masks.unique().tolist()) == {0.0, 1.0}
    np.testing.assert_allclose(masks.mean(dim=(0, 1)).numpy(), 1 - p, atol=0.01)
    # Kaldi's LSTM case: the input and forget gate scales share one uniform draw and are never
    # dropped together (p <= 0.5); the output gate's is independent.
    assert not torch.any((masks[..., 0] == 0) & (masks[..., 1] == 0))
    both = ((masks[..., 0] == 0) & (masks[..., 2] == 0)).float().mean()
    assert abs(float(both) - p * p) < 0.005


def test_mask_modes():
    rows = torch.zeros(50, 40, 0)
    assert torch.all(mask_op(dropout_proportion=0.25).eval()(rows) == 0.75)
    assert torch.all(mask_op(dropout_proportion=0.0).train()(rows) == 1.0)
    assert torch.all(mask_op(dropout_proportion=0.25, test_mode=True).train()(rows) == 0.75)   # <TestMode> T
    continuous = mask_op(dropout_proportion=0.25, continuous=True)
    assert torch.all(continuous.eval()(rows) == 1.0)
    u = continuous.train()(rows)
    assert 0.5 <= float(u.min()) < 0.52 and 1.48 < float(u.max()) <= 1.5 and abs(float(u.mean()) - 1.0) < 0.02


def test_set_dropout_proportion_matches_component_names_and_is_exported():
    nnet = network("dropout-proportion=0.0")
    module = NnetModule(nnet).eval()
    assert module.set_dropout_proportion(0.3, "lstm1*") == 1
    assert module.set_dropout_proportion(0.1, "lstm?.dropout_mask") == 0   # only '*' is special
    assert module.set_dropout_proportion(0.1, "*.dropout_mask") == 2
    assert module.set_dropout_proportion(0.15, "lstm2.dropout_mask") == 1
    with pytest.raises(ValueError, match="not in"):
        module.set_dropout_proportion(1.5)
    assert float(module.op("lstm1.dropout_mask")(torch.zeros(1, 1, 0)).max()) == pytest.approx(0.9)
    back = Nnet.read(KaldiReader.from_bytes(module.nnet.to_bytes()))
    assert back.components["lstm1.dropout_mask"].dropout_proportion == pytest.approx(0.1)
    assert back.components["lstm2.dropout_mask"].dropout_proportion == pytest.approx(0.15)


def test_set_dropout_proportion_reaches_dropout_components():
    nnet = network()
    nnet.components["extra"] = DropoutComponent(dim=4, dropout_proportion=0.5)
    assert nnet.set_dropout_proportion(0.125) == 1 and nnet.components["extra"].dropout_proportion == 0.125


@pytest.mark.parametrize("per_frame", [False, True])
def test_dropout_component_masks_elements_or_whole_frames(per_frame):
    op = ComponentOp(DropoutComponent(dim=4, dropout_proportion=0.25, dropout_per_frame=per_frame)).train()
    y = op(torch.ones(200, 50, 4))
    assert set(y.unique().tolist()) == {0.0, 1.0} and abs(float(y.mean()) - 0.75) < 0.02
    whole_rows = bool(torch.all(y.amin(-1) == y.amax(-1)))
    assert whole_rows == per_frame
    assert torch.all(op.eval()(torch.ones(3, 4)) == 0.75)
