"""Real Kaldi recipe networks, at their recipes' own sizes: the xconfig heredoc of each script with
the script's shell variables filled in (as benchmarks/xconfig_census.py fills them), and the
init/ref/final.config and xconfig.expanded.1/2 that Kaldi's own steps/nnet3/xconfig_to_configs.py
wrote for it (kaldi-asr/kaldi f4007661023b, run with Python 3 up to the config files; its context
check needs the nnet3-init binary), under tests/data/xconfig/<case>/:

  tedlium_nnet3_tdnn_lstm_1a          Kaldi's egs/tedlium/s5_r2/local/nnet3/tuning/run_tdnn_lstm_1a.sh
                                      (train_rnn.py; TDNN + fast-lstmp-layer, decay-time, output-delay)
  mini_librispeech_nnet3_tdnn_lstm_1c egs/mini_librispeech/s5/local/nnet3/tuning/run_tdnn_lstm_1c.sh
                                      (train_rnn.py; fast-lstmp-layer with dropout, l2-regularize)
  swbd_chain_lstm_6j                  egs/swbd/s5c/local/chain/tuning/run_lstm_6j.sh (lstmp-layer)
  swbd_chain_blstm_6j                 egs/swbd/s5c/local/chain/tuning/run_blstm_6j.sh (lstmp-layer,
                                      forward delay=-3 and backward delay=3 layers)
  swbd_chain_tdnn_lstm_1e             egs/swbd/s5c/local/chain/tuning/run_tdnn_lstm_1e.sh
  aspire_nnet3_tdnn                   egs/aspire/s5/local/nnet3/run_tdnn.sh (relu-renorm-layer)
  wsj_chain_tdnn_1g                   egs/wsj/s5/local/chain/tuning/run_tdnn_1g.sh (TDNN-F)
  mini_librispeech_chain_cnn_tdnn_1a  egs/mini_librispeech/s5/local/chain/tuning/run_cnn_tdnn_1a.sh
                                      (idct-layer, combine-feature-maps-layer, six
                                      conv-relu-batchnorm-layers, TDNN-F; Kaldi's idct.mat kept)

No dimension is reduced. The output dim, which the scripts read from the tree, is the one the
script's own results comment reports where it has one (mini_librispeech 2041, wsj 2854), the
swbd 7d tree's 6034 (as in tdnn_7q) for the swbd scripts, and a stand-in 4000 for tedlium and
aspire (3000, the census's stand-in, for the CNN). For each: our configs equal Kaldi's line for line, the network builds, the executor
equals the naive evaluator (tests/model/reference_nnet3.py) on a short utterance, and the
exported model round-trips byte-identically."""
import contextlib
import os
import tempfile

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.compute import ChunkOptions, compute_utterance
from kaldi_avg.model.graph import NnetModule

from ..kaldi.test_xconfig_kaldi_fixtures import assert_configs_equal_kaldis
from .networks import executor_and_reference, randomized, with_batchnorm_stats

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "data", "xconfig")
CASES = ["tedlium_nnet3_tdnn_lstm_1a", "mini_librispeech_nnet3_tdnn_lstm_1c", "swbd_chain_lstm_6j",
         "swbd_chain_blstm_6j", "swbd_chain_tdnn_lstm_1e", "aspire_nnet3_tdnn", "wsj_chain_tdnn_1g",
         "mini_librispeech_chain_cnn_tdnn_1a"]


def _xconfig(case):
    with open(os.path.join(FIXTURES, case, "network.xconfig")) as f:
        return f.read()


_NNETS = {}


def _nnet(case):
    """The ref.config network (fixed-affine layers random), every parameter random and small,
    batch-norm layers with random stats; cached per case."""
    if case not in _NNETS:
        with contextlib.chdir(tempfile.mkdtemp()):   # where an idct-layer writes its matrix
            nnet = randomized(build_nnet(_xconfig(case), f"{case}.xconfig", which="ref"), seed=3, scale=0.03)
        with_batchnorm_stats(nnet, seed=4)
        _NNETS[case] = nnet
    return _NNETS[case]


def _inputs(nnet, T, seed=7):
    dims = {n.name: n.dim for n in nnet.input_nodes()}
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(T, dims["input"])).astype(np.float32)
    ivector = rng.normal(size=dims["ivector"]).astype(np.float32) if "ivector" in dims else None
    return feats, ivector


@pytest.mark.parametrize("case", CASES)
def test_configs_equal_kaldis_line_for_line(case, tmp_path, monkeypatch):
    assert_configs_equal_kaldis(case, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", CASES)
def test_executor_equals_reference(case):
    nnet = _nnet(case)
    feats, ivector = _inputs(nnet, 8)
    opts = ChunkOptions(frames_per_chunk=8)
    got, want = executor_and_reference(nnet, feats, opts, ivector)
    assert got.shape == want.shape and got.shape[0] == 8
    assert np.isfinite(got).all() and np.abs(want).max() > 1e-3
    assert np.abs(got - want).max() < 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("case", CASES)
def test_export_round_trips_byte_identically(case):
    nnet = _nnet(case)
    m = NnetModule(nnet)
    m.write_back()
    data = Nnet3Model(nnet, None).to_bytes(True)
    again = read_nnet3_bytes(data, "final.raw")
    assert again.to_bytes(True) == data
    feats, ivector = _inputs(nnet, 6, seed=8)
    opts = ChunkOptions(frames_per_chunk=6)
    before = compute_utterance(NnetModule(nnet), feats, opts, model_context(nnet), ivector=ivector)
    after = compute_utterance(NnetModule(again.nnet), feats, opts, model_context(nnet), ivector=ivector)
    assert np.array_equal(before, after)
