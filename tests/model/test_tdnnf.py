"""TDNN-F networks (tdnnf-layer, prefinal-layer, the dropout/so variants of the ReLU layers, the
single-component layers) built from an xconfig whose configs are Kaldi's own
(tests/data/xconfig/small_tdnnf): the model context, use-bias=false, the dropout masks. (The
executor against the naive evaluator, forward and backward, export: test_contracts.py.)"""
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.graph import NnetModule

from .families import module_fixtures

case, nnet = module_fixtures("small_tdnnf")


def test_context_counts_the_tdnn_time_offsets(nnet):
    # lda +-1; tdnnf2 (-1,0)(0,1); tdnnf4 shift-left (-3,0)(-3,0); tdnnf5 left-only (-2,0)(0)
    assert model_context(nnet) == (10, 2)


def test_linear_without_bias_has_no_bias_parameter(nnet):
    assert "ops.tdnnf2-linear.bias_params" not in dict(NnetModule(nnet).named_parameters())   # use-bias=false


def test_general_dropout_masks_are_shared_across_time(nnet):
    """dropout-per-dim: one mask row per sequence; continuous: scales in [1-2p, 1+2p]."""
    m = NnetModule(nnet)
    m.train()
    op = m.op("tdnnf2.dropout")
    op.component.dropout_proportion = 0.25
    try:
        x = torch.ones(3, 8, 12)
        y = op(x, torch.arange(8))
    finally:
        op.component.dropout_proportion = 0.0
    assert torch.equal(y, y[:, :1].expand_as(y))
    assert not torch.equal(y[0], y[1])
    assert y.min() >= 0.5 and y.max() <= 1.5
