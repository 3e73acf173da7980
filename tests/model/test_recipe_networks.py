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
aspire (3000, the census's stand-in, for the CNN). For each: our configs equal Kaldi's line for
line. Each is also a family of tests/model/families.py (families.RECIPES), so test_contracts.py
checks that the network builds, the executor equals the naive evaluator
(tests/model/reference_nnet3.py) on a short utterance, training runs forward and backward, and
the exported model round-trips byte-identically."""
import pytest

from ..kaldi.test_xconfig_kaldi_fixtures import assert_configs_equal_kaldis
from .families import RECIPES as CASES


@pytest.mark.parametrize("case", CASES)
def test_configs_equal_kaldis_line_for_line(case, tmp_path, monkeypatch):
    assert_configs_equal_kaldis(case, tmp_path, monkeypatch)

