"""Training without configs/network.xconfig: from Kaldi's configs/final.config (the same final.mdl as
from the xconfig it was made from), from the layer configs of the old steps/nnet3/lstm/make_configs.py
(tests/data/kaldi_configs/make_configs_lstm, made as tests/train/test_network.py says), and from
--trainer.input-model."""
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.binary import KaldiReader
from kaldi_avg.kaldi.nnet3.am import Nnet3Model, read_nnet3_bytes, read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.kaldi.xconfig import write_config_dir
from kaldi_avg.train.cli import main

from .experiment import XCONFIG, make_experiment, train_args
from .test_network import LDA_XCONFIG, MAKE_CONFIGS

ONE_EPOCH = {"--trainer.num-epochs": "1"}


def network_lines(capsys) -> list[str]:
    """The lines where the driver says which network it trains."""
    return [line for line in capsys.readouterr().err.splitlines() if "] network: " in line]


def train(root: str, xconfig: str, network: str, capsys, **over) -> tuple[dict, bytes]:
    """The tiny experiment trained from `xconfig` given as `network`: "xconfig" as it is,
    "final.config" as xconfig_to_configs.py turns it into configs/ (the xconfig removed)."""
    exp = make_experiment(root)
    configs = os.path.join(exp["exp"], "configs")
    xconfig_path = os.path.join(configs, "network.xconfig")
    with open(xconfig_path, "w") as f:
        f.write(xconfig)
    if network == "final.config":
        write_config_dir(xconfig_path, configs, {"NUM_PDFS": exp["num_pdfs"]})
        os.remove(xconfig_path)
    assert main(train_args(exp, **{**ONE_EPOCH, **over})) == 0
    [choice] = network_lines(capsys)
    assert os.path.join(configs, network) in choice
    with open(os.path.join(exp["exp"], "final.mdl"), "rb") as f:
        return exp, f.read()


@pytest.mark.parametrize("xconfig", [XCONFIG, LDA_XCONFIG.replace("dim=6", "dim=NUM_PDFS")], ids=["lstm", "lda"])
def test_final_config_trains_the_same_model_as_its_xconfig(tmp_path, monkeypatch, capsys, xconfig):
    monkeypatch.chdir(tmp_path)   # the LDA xconfig names configs/lda.mat relative to the recipe's dir
    _, from_xconfig = train(str(tmp_path / "xconfig"), xconfig, "network.xconfig", capsys)
    exp, from_configs = train(str(tmp_path / "configs"), xconfig, "final.config", capsys)
    assert from_configs == from_xconfig
    assert os.path.exists(os.path.join(exp["exp"], "init.raw")) == ("fixed-affine-layer" in xconfig)


def test_input_model_trains_the_same_model_as_its_network(tmp_path, capsys):
    exp, from_xconfig = train(str(tmp_path / "xconfig"), XCONFIG, "network.xconfig", capsys)
    raw = str(tmp_path / "0.raw")
    Nnet3Model(read_nnet3_file(os.path.join(exp["exp"], "0.mdl")).nnet).write(raw)
    other = make_experiment(str(tmp_path / "raw"))
    shutil.rmtree(os.path.join(other["exp"], "configs"))   # train_rnn.py: no configs/ with an input model
    assert main(train_args(other, **{**ONE_EPOCH, "--trainer.input-model": raw})) == 0
    [choice] = network_lines(capsys)
    assert choice.endswith(f"network: {raw} (--trainer.input-model, as 0.raw)")
    with open(os.path.join(other["exp"], "final.mdl"), "rb") as f:
        assert f.read() == from_xconfig


def test_make_configs_lstm_trains_and_exports(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exp = make_experiment(str(tmp_path))
    configs = os.path.join(exp["exp"], "configs")
    shutil.rmtree(configs)
    shutil.copytree(MAKE_CONFIGS, configs)
    assert main(train_args(exp, **{"--trainer.num-epochs": "2"})) == 0
    [choice] = network_lines(capsys)
    assert f"network: {configs}/init.config + {configs}/layer1.config + {configs}/layer2.config" in choice
    d = exp["exp"]
    with open(os.path.join(d, "final.mdl"), "rb") as f:
        exported = f.read()
    final = read_nnet3_bytes(exported, "final.mdl")
    assert final.to_bytes() == exported and final.is_am and final.priors.size == exp["num_pdfs"]
    assert {"Lstm1_W_i-xr", "Lstm2_W_i-xr", "Final_affine"} <= set(final.nnet.components)
    with open(os.path.join(configs, "vars")) as f:
        assert f.read().startswith("model_left_context=0\nmodel_right_context=7\n")
    assert model_context(final.nnet) == (0, 7)
    with open(os.path.join(d, "lda.mat"), "rb") as f:
        lda = KaldiReader.from_bytes(f.read()).read_matrix()
    fixed = final.nnet.components["L0_fixaffine"]
    np.testing.assert_array_equal(np.concatenate([fixed.linear_params, fixed.bias_params[:, None]], 1), lda)
    for name in ("init.raw", "configs/lda.mat", "0.mdl", "accuracy.report"):
        assert os.path.exists(os.path.join(d, name)), name
    start = read_nnet3_file(os.path.join(d, "0.mdl")).nnet.components["Lstm2_W_i-xr"].linear_params
    assert not np.array_equal(start, final.nnet.components["Lstm2_W_i-xr"].linear_params)   # it trained


CNN_XCONFIG = """input dim=13 name=input
conv-relu-batchnorm-layer name=cnn1 height-in=13 height-out=13 time-offsets=-1,0,1 height-offsets=-1,0,1 num-filters-out=3
conv-relu-batchnorm-layer name=cnn2 height-in=13 height-out=6 height-subsample-out=2 time-offsets=-1,0,1 required-time-offsets=0 height-offsets=-1,0,1 num-filters-out=4
fast-lstmp-layer name=lstm1 cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
output-layer name=output dim=NUM_PDFS
"""
ATTENTION_XCONFIG = """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=16
attention-relu-renorm-layer name=attention1 num-heads=2 value-dim=6 key-dim=4 num-left-inputs=3 num-right-inputs=1 time-stride=1
output-layer name=output dim=NUM_PDFS
"""
STATS_XCONFIG = """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=16
stats-layer name=tdnn1_stats config=mean+count(-12:1:3:12)
relu-batchnorm-layer name=tdnn2 input=Append(tdnn1, tdnn1_stats) dim=16
output-layer name=output dim=NUM_PDFS
"""


@pytest.mark.parametrize("xconfig", [CNN_XCONFIG, ATTENTION_XCONFIG, STATS_XCONFIG], ids=["cnn", "attention", "stats"])
def test_cnn_attention_and_statistics_networks_train_and_export(tmp_path, capsys, xconfig):
    exp, exported = train(str(tmp_path), xconfig, "network.xconfig", capsys)
    final = read_nnet3_bytes(exported, "final.mdl")
    assert final.to_bytes() == exported and final.is_am and final.priors.size == exp["num_pdfs"]
    start = read_nnet3_file(os.path.join(exp["exp"], "0.mdl")).nnet
    trained = [name for name, comp in final.nnet.components.items() if comp.params()
               and not all(np.array_equal(a, b) for a, b in zip(comp.params().values(),
                                                                start.components[name].params().values()))]
    assert set(trained) == {name for name, comp in final.nnet.components.items() if comp.params()}
