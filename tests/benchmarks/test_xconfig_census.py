"""benchmarks/xconfig_census.py's shell subset (no Kaldi tree needed): a recipe-like script's
xconfig heredoc gets the script's own values, as bash would give them."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("xconfig_census", REPO / "benchmarks" / "xconfig_census.py")
census = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(census)

SCRIPT = r"""#!/bin/bash
stage=0
affix=1a
xent_regularize=0.1
chunk_width=140,100,160
speed_perturb=true
suffix=
$speed_perturb && suffix=_sp
dir=exp/chain/tdnn${affix:+_$affix}$suffix
. ./utils/parse_options.sh
if [ $stage -le 12 ]; then
  num_targets=$(tree-info exp/tree/tree |grep num-pdfs|awk '{print $2}')
  learning_rate_factor=$(echo "print (0.5/$xent_regularize)" | python)
  frames=$(echo $chunk_width | cut -d, -f1)
  half=$(( $frames / 2 ))
  opts="l2-regularize=0.01 dropout-proportion=0.0"
  mkdir -p $dir/configs
  cat <<EOF > $dir/configs/network.xconfig
  input dim=40 name=input
  fixed-affine-layer name=lda input=Append(-1,0,1) affine-transform-file=$dir/configs/lda.mat
  relu-batchnorm-layer name=tdnn1 $opts dim=$half $not_set
  output-layer name=output-xent dim=$num_targets learning-rate-factor=$learning_rate_factor
EOF
fi
"""


def test_heredoc_gets_the_scripts_values():
    census.USED_COMMAND_STAND_INS.clear()
    (doc,) = census.find_xconfigs(SCRIPT)
    text, unresolved, stand_ins, unset = census.fill_xconfig(doc)
    assert text.split("\n")[1:4] == [
        "  fixed-affine-layer name=lda input=Append(-1,0,1) affine-transform-file=exp/chain/tdnn_1a_sp/configs/lda.mat",
        "  relu-batchnorm-layer name=tdnn1 l2-regularize=0.01 dropout-proportion=0.0 dim=70 ",
        "  output-layer name=output-xent dim=3000 learning-rate-factor=5.0"]
    assert unresolved == [] and unset == ["not_set"]
    assert stand_ins == {} and census.USED_COMMAND_STAND_INS == {"tree-info": "3000"}
