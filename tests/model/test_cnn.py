"""The CNN layers (conv-*-layer, res-block, channel-average-layer) built from
tests/data/xconfig/small_cnn, whose configs are Kaldi's own: the model context follows the
required time offsets, training runs with the convolution's natural gradient (docs/kaldi-formats.md
4.23, 5.14). (The executor against the naive evaluator, with zero padding in height and in time
where a time offset is optional, forward and backward, export: test_contracts.py.)"""
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.graph import NnetModule

from .families import module_fixtures

case, nnet = module_fixtures("small_cnn")


def test_context_counts_only_required_time_offsets(nnet):
    """cnn1 (-1,0,1), cnn2 (-1,0,1), cnn3 (-3,0,3), res6 without zero padding (-2,0,2 twice...
    once: its middle conv), cnn10 (-1,0) and cnn11 (0,1), the average (-2,0,2); conv4 and the
    zero-padded res-blocks require only offset 0."""
    assert model_context(nnet) == (1 + 1 + 3 + 2 + 1 + 2, 1 + 1 + 3 + 2 + 1 + 2)


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
