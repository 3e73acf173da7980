#!/usr/bin/env bash
# The chain (LF-MMI) preparation of Kaldi's local/chain/run_tdnn.sh recipes, on this recipe's
# outputs (run.sh stages 0-7: data/lang, the speed-perturbed data and its monophone alignments):
#
#   local/chain/prepare.sh [--stage N] [--frame-subsampling-factor 3] [--left-tolerance 5]
#       [--right-tolerance 5] [--lm-opts "--num-extra-lm-states=2000"] [--lat-dir <dir>]
#       [<lang-dir> <ali-dir> <data-dir> <chain-dir>]
#
# Default dirs: data/lang exp/mono_ali_sp data/train_sp_hires exp/chain. One command,
# python3 -m kaldi_avg.chain.prepare (docs/chain.md 8), makes in <chain-dir>: lang/ (<lang-dir>
# with gen_topo.py's topology), the tree dir (tree, 0.trans_mdl, ali.N.gz at 1/3 of the frame
# rate; a monophone tree: the pip-only path cannot build Kaldi's context-dependent one),
# phone_lm.fst, den.fst, normalization.fst and supervision.N.ark (Kaldi's text Supervision
# archives, from the alignments, or from <lat-dir>/lat.N.gz with --lat-dir); logs in log/.
# Stages (--stage N starts there): 0 gen_topo, 1 tree, 2 phone_lm, 3 den_fst, 4 supervision.
set -euo pipefail

stage=0
frame_subsampling_factor=3
left_tolerance=5
right_tolerance=5
lm_opts="--num-extra-lm-states=2000"
lat_dir=
help_message="Usage: $0 [--stage N] [--frame-subsampling-factor 3] [--left-tolerance 5] [--right-tolerance 5] [--lm-opts '--num-extra-lm-states=2000'] [--lat-dir <dir>] [<lang-dir> <ali-dir> <data-dir> <chain-dir>]"

. ./path.sh
. utils/parse_options.sh

if [ $# -eq 0 ]; then
  set -- data/lang exp/mono_ali_sp data/train_sp_hires exp/chain
fi
if [ $# -ne 4 ]; then
  echo "$help_message" >&2
  exit 1
fi

python3 -m kaldi_avg.chain.prepare --stage="$stage" \
  --frame-subsampling-factor="$frame_subsampling_factor" \
  --left-tolerance="$left_tolerance" --right-tolerance="$right_tolerance" \
  --lm-opts="$lm_opts" ${lat_dir:+--lat-dir="$lat_dir"} "$@"
