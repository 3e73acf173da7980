#!/usr/bin/env bash
# local/nnet3/make_xconfig.sh [--network lstm|tdnn] [--cell-dim 64] [--projection-dim 0] [--label-delay 5]
#     [--tdnn-dim 256] <ali-dir> <feat-dir> <dir>
# Writes <dir>/configs/network.xconfig: a small LSTM (or, with --network tdnn, a TDNN as Kaldi's
# local/nnet3/run_tdnn.sh recipes for steps/nnet3/train_dnn.py) acoustic model whose input dim is the
# feature dim of <feat-dir>/feats.scp and whose output dim is the number of pdfs of the
# alignment model <ali-dir>/final.mdl (what tree-info would print for <ali-dir>/tree).
# As in Kaldi's LSTM recipes, the spliced input goes through an LDA-like fixed affine layer
# (estimated by the trainer into <dir>/configs/lda.mat), which also normalises its input, so
# a network trained without CMVN (egs/synth_digits) takes raw MFCCs as online decoders (vosk)
# give them; egs/fsdd trains with per-speaker CMVN instead. --projection-dim P > 0 makes the
# layer a projected LSTM (fast-lstmp-layer, recurrent and non-recurrent projections of P).
set -euo pipefail

network=lstm
cell_dim=64
projection_dim=0
label_delay=5
tdnn_dim=256
. utils/parse_options.sh
if [ $# -ne 3 ]; then
  echo "Usage: $0 [--network lstm|tdnn] [--cell-dim 64] [--projection-dim 0] [--label-delay 5] [--tdnn-dim 256] <ali-dir> <feat-dir> <dir>" >&2
  exit 1
fi
ali_dir=$1; feat_dir=$2; dir=$3
for f in "$ali_dir/final.mdl" "$feat_dir/feats.scp"; do
  [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
done

read -r num_pdfs feat_dim < <(python3 - "$ali_dir/final.mdl" "$feat_dir/feats.scp" <<'PY'
import sys
from kaldi_avg.kaldi.tables import MatrixTable
from kaldi_avg.kaldi.transition import read_transition_model
feats = MatrixTable(sys.argv[2])
print(read_transition_model(sys.argv[1]).num_pdfs, feats.shape(next(iter(feats)))[1])
PY
)
if [ "$network" = tdnn ]; then   # splices widen to +-3: a context of 2 + 1 + 1 + 3 + 3 = 10 frames each side
  body="relu-batchnorm-layer name=tdnn1 dim=$tdnn_dim
relu-batchnorm-layer name=tdnn2 input=Append(-1,0,1) dim=$tdnn_dim
relu-batchnorm-layer name=tdnn3 input=Append(-1,0,1) dim=$tdnn_dim
relu-batchnorm-layer name=tdnn4 input=Append(-3,0,3) dim=$tdnn_dim
relu-batchnorm-layer name=tdnn5 input=Append(-3,0,3) dim=$tdnn_dim
output-layer name=output input=tdnn5 dim=$num_pdfs max-change=1.5"
elif [ "$projection_dim" -gt 0 ]; then
  body="fast-lstmp-layer name=lstm1 cell-dim=$cell_dim recurrent-projection-dim=$projection_dim non-recurrent-projection-dim=$projection_dim delay=-1
output-layer name=output input=lstm1 output-delay=$label_delay dim=$num_pdfs max-change=1.5"
else
  body="fast-lstm-layer name=lstm1 cell-dim=$cell_dim delay=-1
output-layer name=output input=lstm1 output-delay=$label_delay dim=$num_pdfs max-change=1.5"
fi
# The LSTM's label delay delays the LDA too (Kaldi's LSTM recipes: the LDA statistics need no more
# context than the network; xconfig_to_configs.py refuses the network otherwise).
lda_opts=""; [ "$network" = tdnn ] || [ "$label_delay" -eq 0 ] || lda_opts=" delay=$label_delay"
mkdir -p "$dir/configs"
cat > "$dir/configs/network.xconfig" <<XCONFIG
input dim=$feat_dim name=input
fixed-affine-layer name=lda${lda_opts} input=Append(-2,-1,0,1,2) affine-transform-file=$dir/configs/lda.mat
$body
XCONFIG
echo "$0: wrote $dir/configs/network.xconfig ($network, $feat_dim-dim input, $num_pdfs pdfs)"
