#!/usr/bin/env bash
# local/nnet3/make_xconfig.sh [--cell-dim 64] [--projection-dim 0] [--label-delay 5] <ali-dir> <feat-dir> <dir>
# Writes <dir>/configs/network.xconfig: a small LSTM acoustic model whose input dim is the
# feature dim of <feat-dir>/feats.scp and whose output dim is the number of pdfs of the
# alignment model <ali-dir>/final.mdl (what tree-info would print for <ali-dir>/tree).
# As in Kaldi's LSTM recipes, the spliced input goes through an LDA-like fixed affine layer
# (estimated by the trainer into <dir>/configs/lda.mat), which also normalises its input, so
# a network trained without CMVN (egs/synth_digits) takes raw MFCCs as online decoders (vosk)
# give them; egs/fsdd trains with per-speaker CMVN instead. --projection-dim P > 0 makes the
# layer a projected LSTM (fast-lstmp-layer, recurrent and non-recurrent projections of P).
set -euo pipefail

cell_dim=64
projection_dim=0
label_delay=5
. utils/parse_options.sh
if [ $# -ne 3 ]; then
  echo "Usage: $0 [--cell-dim 64] [--projection-dim 0] [--label-delay 5] <ali-dir> <feat-dir> <dir>" >&2
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
if [ "$projection_dim" -gt 0 ]; then
  lstm="fast-lstmp-layer name=lstm1 cell-dim=$cell_dim recurrent-projection-dim=$projection_dim non-recurrent-projection-dim=$projection_dim delay=-1"
else
  lstm="fast-lstm-layer name=lstm1 cell-dim=$cell_dim delay=-1"
fi
mkdir -p "$dir/configs"
cat > "$dir/configs/network.xconfig" <<XCONFIG
input dim=$feat_dim name=input
fixed-affine-layer name=lda input=Append(-2,-1,0,1,2) affine-transform-file=$dir/configs/lda.mat
$lstm
output-layer name=output input=lstm1 output-delay=$label_delay dim=$num_pdfs max-change=1.5
XCONFIG
echo "$0: wrote $dir/configs/network.xconfig ($feat_dim-dim input, $num_pdfs pdfs)"
