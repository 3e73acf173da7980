"""The feature front-end layers (idct-layer, spec-augment-layer, delta-layer,
combine-feature-maps-layer) built from tests/data/xconfig/small_frontend, whose configs and
idct.mat are Kaldi's own: the idct matrix is Kaldi's file, SpecAugment's training masks have
Kaldi's shape and statistics (docs/kaldi-formats.md 4.21, 4.22, 5.13). (The executor against the
naive evaluator in test mode, forward and backward, export: test_contracts.py.)"""
import os

import numpy as np
import torch

from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.graph import NnetModule

from .families import XCONFIGS, module_fixtures

FIXTURE = os.path.join(XCONFIGS, "small_frontend")

case, nnet = module_fixtures("small_frontend")


def test_idct_matrix_is_kaldis_file(nnet):
    with open(os.path.join(FIXTURE, "idct.mat")) as f:
        want = np.array(f.read().strip("[] \n").split(), dtype=np.float32).reshape(6, 7)
    idct = nnet.components["idct"]
    assert np.array_equal(np.hstack([idct.linear_params, idct.bias_params[:, None]]), want)


def test_context_counts_the_delta_and_lda_offsets(nnet):
    assert model_context(nnet) == (2, 2)


def test_time_mask_zeroes_whole_frames_in_runs(nnet):
    """Runs of 1..20 zeroed frames between kept runs of 1..int(20 * 0.8 / 0.2) = 80 frames:
    about 10.5 / (10.5 + 40.5) of the frames zeroed."""
    op = NnetModule(nnet).op("spec-augment.time-mask")
    op.train()
    torch.manual_seed(0)
    y = op(torch.ones(100, 300, 6), torch.arange(300))
    assert torch.equal(y, y[..., :1].expand_as(y))
    frames = y[..., 0]
    assert 0.17 < 1.0 - frames.mean() < 0.24
    for row in frames[:20]:
        edges = torch.nonzero(torch.diff(row)).reshape(-1) + 1
        runs = torch.diff(torch.cat([torch.tensor([0]), edges, torch.tensor([300])]))
        values = row[torch.cat([torch.tensor([0]), edges])]
        inner = slice(1, -1)   # the first and last runs may be cut by the chunk's ends
        assert runs[inner][values[inner] == 0].max() <= 20
        assert runs[inner][values[inner] == 1].max() <= 80
    op.eval()
    x = torch.randn(2, 5, 6)
    assert torch.equal(op(x, torch.arange(5)), x)


def test_freq_mask_zeroes_one_wrapping_band_per_sequence(nnet):
    """0..round(6 * 0.5) = 3 adjacent bins (mod 6), uniformly many, shared across time."""
    op = NnetModule(nnet).op("spec-augment.freq-mask")
    op.train()
    torch.manual_seed(0)
    y = op(torch.ones(4000, 3, 6), torch.arange(3))
    assert torch.equal(y, y[:, :1].expand_as(y))
    counts = torch.bincount((y[:, 0] == 0).sum(-1), minlength=4)
    assert len(counts) == 4 and (counts - 1000).abs().max() < 120
    for row in y[:200, 0]:
        zeros = [i for i in range(6) if row[i] == 0]
        if zeros:   # one band: exactly one zero entered going round the circle
            assert sum(row[i] == 0 and row[i - 1] == 1 for i in range(6)) == 1
    assert set(y.unique().tolist()) <= {0.0, 1.0}   # no rescaling
    op.eval()
    x = torch.randn(2, 5, 6)
    assert torch.equal(op(x, torch.arange(5)), x)
