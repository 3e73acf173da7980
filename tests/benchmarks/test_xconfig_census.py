"""benchmarks/xconfig_census.py without a Kaldi tree: bash expands a recipe-like script in the
sandbox (with the real Kaldi recipes too where KALDI_TREE names an extracted kaldi-asr/kaldi tree),
and the network checks catch a parameter without gradient and an output that ignores the future."""
import importlib.util
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("xconfig_census", REPO / "benchmarks" / "xconfig_census.py")
census = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(census)

SCRIPT = r"""#!/usr/bin/env bash
set -euo pipefail
stage=0
affix=1a
xent_regularize=0.1
chunk_width=140,100,160
cell_dim=512
label_delay=5
speed_perturb=true
suffix=
$speed_perturb && suffix=_sp
dir=exp/chain/tdnn${affix:+_$affix}
. ./cmd.sh
. ./path.sh
. ./utils/parse_options.sh
if [ $label_delay -gt 0 ]; then dir=${dir}_ld$label_delay; fi
dir=$dir$suffix
for f in data/train/feats.scp exp/tri3_ali/ali.1.gz; do
  [ ! -f $f ] && echo "$0: expected file $f to exist" && exit 1
done
local/nnet3/run_ivector_common.sh --stage $stage || exit 1
if [ $stage -le 12 ]; then
  num_targets=$(tree-info exp/tree/tree | grep num-pdfs | awk '{print $2}')
  feat_dim=`feat-to-dim scp:data/train/feats.scp -`
  num_speakers=$(cat exp/xvector/egs/info/output_dim)
  learning_rate_factor=$(echo "print(0.5/$xent_regularize)" | python)
  frames=$(echo $chunk_width | cut -d, -f1)
  lstm_opts="cell-dim=$cell_dim"
  lstm_opts+=" recurrent-projection-dim=$[cell_dim/4]"
  mkdir -p $dir/configs
  cat <<EOF > $dir/configs/network.xconfig
  input dim=$feat_dim name=input
  fast-lstmp-layer name=lstm1 $lstm_opts delay=-3
  relu-layer name=tdnn1 dim=$(( frames / 2 )) $not_set
  output-layer name=output dim=$num_targets
  output-layer name=output-xent dim=$num_targets learning-rate-factor=$learning_rate_factor
EOF
  for k in 1 2; do
    echo "output-layer name=output-$k input=tdnn1 dim=$num_speakers" >> $dir/configs/network.xconfig
  done
  steps/nnet3/xconfig_to_configs.py --xconfig-file $dir/configs/network.xconfig --config-dir $dir/configs
fi
if [ $stage -le 13 ]; then
  echo "input dim=40 name=input" > $dir/configs/adapt.xconfig
  steps/nnet3/xconfig_to_configs.py --existing-model $dir/final.mdl \
    --xconfig-file $dir/configs/adapt.xconfig --config-dir $dir/configs
fi
rm -rf $dir
"""


@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    return census.Shell(str(tmp_path_factory.mktemp("shell")), census.default_recipe_python())


def test_bash_expands_the_script_with_its_defaults(tmp_path, shell):
    script = tmp_path / "egs" / "corpus" / "s5" / "local" / "chain" / "tuning" / "run_tdnn_1a.sh"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT)
    (tmp_path / "egs" / "corpus" / "s5" / "local" / "nnet3").mkdir()
    (tmp_path / "egs" / "corpus" / "s5" / "local" / "nnet3" / "run_ivector_common.sh").write_text("exit 1\n")
    kaldi = str(tmp_path)
    assert census.recipe_scripts(kaldi) == [str(script)]
    first, second = census.collect(kaldi, shell, [str(script)], jobs=1, timeout=30)
    assert first["recipe"] == "corpus/s5/local/chain/tuning/run_tdnn_1a.sh#1" and first["status"] is None
    assert first["xconfig_file"] == "exp/chain/tdnn_1a_ld5_sp/configs/network.xconfig"
    assert first["xconfig"].split("\n") == [
        "  input dim=40 name=input",
        "  fast-lstmp-layer name=lstm1 cell-dim=512 recurrent-projection-dim=128 delay=-3",   # += and $[ ]
        "  relu-layer name=tdnn1 dim=70 ",
        "  output-layer name=output dim=3000",
        "  output-layer name=output-xent dim=3000 learning-rate-factor=5.0",
        "output-layer name=output-1 input=tdnn1 dim=3000",   # appended in a loop
        "output-layer name=output-2 input=tdnn1 dim=3000",
        ""]
    assert first["stand_ins"] == ["feat-to-dim", "output_dim", "tree-info"]
    assert second["recipe"].endswith("#2") and second["status"] == "skipped"
    assert second["xconfig"] == "input dim=40 name=input\n"
    assert not (tmp_path / "egs" / "corpus" / "s5" / "exp").exists()   # the sandbox is elsewhere


def test_a_script_that_never_calls_xconfig_to_configs(tmp_path, shell):
    script = tmp_path / "egs" / "corpus" / "s5" / "local" / "run_lstm.sh"
    script.parent.mkdir(parents=True)
    script.write_text("stage=20\nif [ $stage -le 15 ]; then\n  steps/nnet3/xconfig_to_configs.py --xconfig-file x\nfi\n")
    (r,) = census.collect(str(tmp_path), shell, [str(script)], jobs=1, timeout=30)
    assert r["status"] == "shell-fail" and "no xconfig_to_configs.py call" in r["error"]


KALDI_TREE = os.environ.get("KALDI_TREE")
RECIPES = {  # script -> a line of its xconfig as Kaldi's bash gives it
    "aspire/s5/local/nnet3/run_blstm.sh":
        "fast-lstmp-layer name=blstm1-backward input=lda delay=1 decay-time=20 cell-dim=1024 "
        "recurrent-projection-dim=128 non-recurrent-projection-dim=128",
    "tedlium/s5_r2/local/nnet3/tuning/run_lstm_1a.sh":
        "fast-lstmp-layer name=fastlstm1 delay=-1 decay-time=20 cell-dim=1024 "
        "recurrent-projection-dim=256 non-recurrent-projection-dim=256",
    "aspire/s5/local/nnet3/run_autoencoder.sh": "input dim=40 name=input",
    "wsj/s5/local/chain/e2e/run_tdnn_lstm_flatstart.sh":
        "fast-lstmp-layer name=fastlstm1 cell-dim=512 recurrent-projection-dim=128 "
        "non-recurrent-projection-dim=128 delay=-3 l2-regularize=0.0025",
}


@pytest.mark.skipif(not KALDI_TREE, reason="set KALDI_TREE to an extracted kaldi-asr/kaldi tree (egs/) "
                                          "to expand its recipes")
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_kaldi_recipes_expand_as_bash_expands_them(recipe, shell):
    script = os.path.join(KALDI_TREE, "egs", recipe)
    (call,), note = shell.expand(script, census.recipe_dir(KALDI_TREE, script), recipe, timeout=60)
    assert note == ""
    assert RECIPES[recipe] in [line.strip() for line in call["xconfig"].split("\n")]


def _network(xconfig: str):
    return census.build_reference(re.sub(r"^\s+", "", xconfig, flags=re.M), None)


TDNN = """
input dim=10 name=input
relu-batchnorm-layer name=tdnn1 dim=12 input=Append(-1,0,1)
relu-batchnorm-layer name=tdnn2 dim=12 input={tdnn2_input}
output-layer name=output dim=5 include-log-softmax=false
output-layer name=output-xent input=tdnn2 dim=5
"""


def test_every_parameter_gets_a_gradient():
    res = {}
    census.check_network(_network(TDNN.format(tdnn2_input="tdnn1")), 8, False, res)
    assert res["randomized"] == ["output.affine/linear_params", "output.affine/bias_params",
                                 "output-xent.affine/linear_params", "output-xent.affine/bias_params"]
    assert res["future_frames"] == {"output_frame": 0, "input_frames": [1, 8]}   # right context 1


def test_a_parameter_without_gradient_fails():
    res = {}
    # tdnn2's too: its input is zero, and its batchnorm takes away what its bias adds
    with pytest.raises(AssertionError, match=r"4 parameters without gradient: tdnn1.affine/linear_params, "
                                             r"tdnn1.affine/bias_params, tdnn2.affine/linear_params, "
                                             r"tdnn2.affine/bias_params$"):
        census.check_network(_network(TDNN.format(tdnn2_input="Scale(0.0, tdnn1)")), 8, False, res)
    assert res["stage"] == "backward"


def test_an_output_that_ignores_its_right_context_fails():
    xconfig = TDNN.format(tdnn2_input="tdnn1").replace("Append(-1,0,1)", "Append(-1, 0, Scale(0.0, Offset(input, 2)))")
    res = {}
    with pytest.raises(AssertionError, match=r"output frame 0 does not change with input frames 1\.\.9"):
        census.check_network(_network(xconfig), 8, False, res)
    assert res["stage"] == "future" and res["context"] == [1, 2]


LSTM = """
input dim=10 name=input
fast-lstmp-layer name=forward input=Append(-1,0,1) cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
fast-lstmp-layer name=backward input=input cell-dim=8 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay={delay}
output-layer name=output input=Append(forward, backward) dim=5
"""


def test_a_blstm_output_depends_on_the_last_frame():
    res = {}
    census.check_network(_network(LSTM.format(delay=1)), 8, True, res)
    # frames 2.. are past the right context (1): only the backward layer carries them back
    assert res["context"] == [1, 1] and res["future_frames"] == {"output_frame": 0, "input_frames": [2, 8]}


def test_a_forward_lstm_fails_as_a_blstm():
    nnet = _network(LSTM.format(delay=-1))
    res = {}
    census.check_network(nnet, 8, False, res)
    assert res["future_frames"] == {"output_frame": 0, "input_frames": [1, 8]}   # right context 1
    with pytest.raises(AssertionError, match=r"output frame 0 does not change with input frames 2\.\.8"):
        census.check_network(nnet, 8, True, {})


def test_a_causal_network_is_not_checked_for_the_future():
    res = {}
    census.check_network(_network(TDNN.format(tdnn2_input="tdnn1").replace("Append(-1,0,1)", "Append(-2,-1,0)")),
                         8, False, res)
    assert res["context"] == [2, 0] and res["future_frames"] == "n/a"


def test_backward_recurrence_is_a_recurrent_layer_with_positive_delay(tmp_path):
    expanded = tmp_path / "xconfig.expanded.2"
    header = "# This file was created by the command:\n# steps/nnet3/xconfig_to_configs.py ...\n"
    expanded.write_text(header + "fixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2)\n"
                                 "fast-lstmp-layer name=lstm1 cell-dim=8 delay=-3\n")
    assert not census.has_backward_recurrence(str(tmp_path))
    expanded.write_text(header + "lstmp-layer name=blstm1-backward cell-dim=8 delay=3\n")
    assert census.has_backward_recurrence(str(tmp_path))
