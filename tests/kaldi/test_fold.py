"""Folding one speaker's CMVN into the input layer: the folded network on raw features computes
what the original computes on normalized features."""
import numpy as np
import pytest
import torch

from kaldi_avg.kaldi.cmvn import apply_cmvn, cmvn_transform, compute_cmvn_stats
from kaldi_avg.kaldi.nnet3.fold import FoldError, fold_input_transform
from kaldi_avg.kaldi.nnet3.nnet import Nnet
from kaldi_avg.model.graph import NnetModule
from tests.model.networks import randomized, spec_5_10_config


def _outputs(nnet: Nnet, feats: np.ndarray) -> np.ndarray:
    module = NnetModule(nnet).eval()
    with torch.no_grad():
        return module(torch.as_tensor(feats)[None], left_context=0, num_frames=len(feats) - 3)[0].numpy()


@pytest.mark.parametrize("norm_vars", [False, True])
def test_folded_network_on_raw_features_equals_network_on_normalized(norm_vars):
    rng = np.random.default_rng(0)
    feats = (rng.normal(size=(30, 4)) * [1.0, 3.0, 0.5, 2.0] + [5.0, -2.0, 1.0, 0.0]).astype(np.float32)
    stats = compute_cmvn_stats([feats[:20], feats[20:]])
    nnet = randomized(Nnet.from_config(spec_5_10_config()))
    want = _outputs(nnet, apply_cmvn(feats, stats, True, norm_vars))
    offset, scale = cmvn_transform(stats, norm_vars)
    assert fold_input_transform(nnet, offset, scale) == "lda"
    np.testing.assert_allclose(_outputs(nnet, feats), want, atol=2e-5)


def test_networks_that_cannot_be_folded_are_refused():
    text = spec_5_10_config()
    two_readers = text.replace("input-node name=input dim=4\n", "input-node name=input dim=4\n"
                               "component name=extra type=RectifiedLinearComponent dim=4\n"
                               "component-node name=extra component=extra input=input\n")
    with pytest.raises(FoldError, match="exactly one component node"):
        fold_input_transform(Nnet.from_config(two_readers), np.zeros(4), np.ones(4))
    summed = text.replace("input=Append(Offset(input, -1), input, Offset(input, 1))",
                          "input=Append(Offset(input, -1), Sum(input, input), Offset(input, 1))")
    with pytest.raises(FoldError, match="splice frames of 'input' only"):
        fold_input_transform(Nnet.from_config(summed), np.zeros(4), np.ones(4))
    with pytest.raises(FoldError, match="do not match input dim 4"):
        fold_input_transform(Nnet.from_config(text), np.zeros(3), np.ones(3))
