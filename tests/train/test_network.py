"""Which network the driver trains (kaldi_avg/train/network.py): the first of --trainer.input-model,
configs/network.xconfig, configs/final.config and make_configs.py's configs/layer*.config; the init
network from <dir>/init.raw above --stage -5, else configs/init.config; one error naming every file.

tests/data/kaldi_configs/make_configs_lstm/ is the output of Kaldi's own
steps/nnet3/lstm/make_configs.py (kaldi-asr/kaldi f4007661023b, run with Python 3 in a directory
whose steps/ links to Kaldi's egs/wsj/s5/steps; nothing edited):

    steps/nnet3/lstm/make_configs.py --feat-dim 13 --num-targets 6 --num-lstm-layers 2 \\
        --splice-indexes "-2,-1,0,1,2 0" --cell-dim 12 --hidden-dim 12 --recurrent-projection-dim 4 \\
        --non-recurrent-projection-dim 4 --label-delay 5 --self-repair-scale-nonlinearity 0.00001 \\
        exp/nnet3/lstm/configs

(the options of ami s5b's local/nnet3/run_lstm.sh, at the size of tests/train/experiment.py's data).
"""
import os
import shutil

import pytest

from kaldi_avg.kaldi.nnet3.am import Nnet3Model
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.xconfig import write_config_dir
from kaldi_avg.train.config import ConfigError
from kaldi_avg.train.network import InputModel, KaldiConfigs, XconfigNetwork, find_network

MAKE_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "data", "kaldi_configs", "make_configs_lstm")
LDA_XCONFIG = """input dim=13 name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2) affine-transform-file=configs/lda.mat
fast-lstmp-layer name=lstm1 cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
output-layer name=output dim=6 max-change=1.5
"""


@pytest.fixture
def exp_dir(tmp_path, monkeypatch):
    """An experiment dir whose configs/ holds the xconfig_to_configs.py output of LDA_XCONFIG."""
    monkeypatch.chdir(tmp_path)
    configs = tmp_path / "exp" / "configs"
    configs.mkdir(parents=True)
    (configs / "network.xconfig").write_text(LDA_XCONFIG)
    write_config_dir(str(configs / "network.xconfig"), str(configs))
    return tmp_path / "exp"


def test_network_xconfig_comes_first_then_final_config(exp_dir):
    assert isinstance(find_network(str(exp_dir), -4, None), XconfigNetwork)
    os.remove(exp_dir / "configs" / "network.xconfig")
    network = find_network(str(exp_dir), -4, None)
    assert isinstance(network, KaldiConfigs) and network.path == str(exp_dir / "configs" / "final.config")
    assert network.description.startswith(f"{exp_dir}/configs/init.config + {exp_dir}/configs/final.config")


def test_input_model_comes_before_any_config(exp_dir):
    raw = exp_dir / "x.raw"
    Nnet3Model(find_network(str(exp_dir), -4, None).reference(6)).write(str(raw))
    network = find_network(str(exp_dir), -4, str(raw))
    assert isinstance(network, InputModel) and network.lda_init_network(6) is None
    assert model_context(network.initial_network(6, None, 0)) == (2, 2)


def test_init_raw_stands_in_for_init_config_above_stage_minus_5(exp_dir):
    os.remove(exp_dir / "configs" / "network.xconfig")
    network = find_network(str(exp_dir), -4, None)
    network.write_files(str(exp_dir), -4, 6, (2, 2))   # train_rnn.py's stage -5: init.raw
    assert (exp_dir / "init.raw").exists()
    assert find_network(str(exp_dir), -4, None).init_raw == str(exp_dir / "init.raw")
    assert find_network(str(exp_dir), -5, None).init_raw is None


def test_lda_is_as_wide_as_the_init_network_output(exp_dir):
    os.remove(exp_dir / "configs" / "network.xconfig")
    network = find_network(str(exp_dir), -4, None)
    assert network.lda_init_network(6).output_dim() == 65
    assert network.reference(6).components["lda"].linear_params.shape == (65, 65)


def test_lda_without_init_config_is_one_error(exp_dir):
    for name in ("network.xconfig", "init.config"):
        os.remove(exp_dir / "configs" / name)
    with pytest.raises(ConfigError, match=r"final.config: a FixedAffineComponent reads lda.mat, .*"
                                          r"/configs/init.config is missing"):
        find_network(str(exp_dir), -4, None).reference(6)


def test_no_network_names_every_file_looked_for(tmp_path):
    with pytest.raises(ConfigError) as e:
        find_network(str(tmp_path), -4, None)
    for name in ("configs/network.xconfig", "configs/final.config", "configs/layer1.config",
                 "--trainer.input-model"):
        assert name in str(e.value)
    with pytest.raises(ConfigError, match=r"x.raw is missing \(--trainer.input-model\)"):
        find_network(str(tmp_path), -4, str(tmp_path / "x.raw"))


def test_make_configs_layers_are_added_in_turn(tmp_path):
    shutil.copytree(MAKE_CONFIGS, tmp_path / "configs")
    network = find_network(str(tmp_path), -10, None)
    assert [os.path.basename(p) for p, _ in network.configs] == ["layer1.config", "layer2.config"]
    nnet = network.reference(6)
    # layer2.config replaced the output layer of layer1.config: it now reads the second LSTM
    assert str(nnet.node("Final_affine").input) == "Lstm2_rp_t"
    assert nnet.has_node("Lstm1_rp_t") and nnet.output_dim() == 6
    with open(tmp_path / "configs" / "vars") as f:
        assert f.read().startswith(f"model_left_context={model_context(nnet)[0]}\n"
                                   f"model_right_context={model_context(nnet)[1]}\n")


@pytest.mark.parametrize("lda_delay, refused", [("", True), (" delay=5", False)])
def test_a_label_delay_without_the_lda_delay_is_refused_as_by_xconfig_to_configs(tmp_path, monkeypatch, lda_delay,
                                                                                  refused):
    """Kaldi's xconfig_to_configs.py (f40076610) raises for this xconfig without delay=5 (init.config
    context 2/2, ref.config 0/7) and accepts it with."""
    monkeypatch.chdir(tmp_path)
    text = LDA_XCONFIG.replace("name=lda", "name=lda" + lda_delay).replace("name=output", "name=output output-delay=5")
    network = XconfigNetwork("network.xconfig", text)
    if refused:
        with pytest.raises(ConfigError, match=r"network.xconfig: the init network .* context 2/2, more than the "
                                              r"network's 0/7: .* delay=D"):
            network.reference(6)
    else:
        assert model_context(network.reference(6)) == (0, 7)
