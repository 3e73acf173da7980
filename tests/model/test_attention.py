"""The attention layers built from tests/data/xconfig/small_attention, whose configs are Kaldi's
own: the model context counts only the required window frames, training computes what test mode
does; and on one component, the missing-frame rule of Kaldi's attention.cc worked by hand
(docs/kaldi-formats.md 4.24, 5.15). (The executor against the naive evaluator, with optional
window frames present or zero-padded at the chunk edges, forward and backward, export:
test_contracts.py.)"""
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule

from .families import module_fixtures

case, nnet = module_fixtures("small_attention")


def test_context_counts_only_the_required_window_frames(nnet):
    """lda +-1; attention1 2 left and 1 right at stride 2; attention2 1 right; attention3 1 left;
    attention4 none (its window frames are all optional)."""
    assert model_context(nnet) == (1 + 4 + 1, 1 + 2 + 1)


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
