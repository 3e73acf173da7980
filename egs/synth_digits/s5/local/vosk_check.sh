#!/usr/bin/env bash
# local/vosk_check.sh [--fold-cmvn true|false] <mfcc-config> <nnet-dir> <graph-dir> <data-dir> <decode-dir>
# The independent real-Kaldi check: packs <nnet-dir>/final.mdl, the graph and the feature
# config into a vosk model directory (<nnet-dir>/vosk), decodes <data-dir>'s recordings with
# vosk (Kaldi's online2/nnet3 code), scores them against <data-dir>/text and compares the
# hypotheses with <decode-dir>, a decode it makes with steps/nnet3/decode.sh computing the network
# as vosk does (looped over whole utterances). <decode-dir> must be inside <nnet-dir>. vosk
# applies no CMVN: for a model trained with per-speaker CMVN, --fold-cmvn true folds the CMVN of
# <data-dir>'s only speaker into the network vosk gets, so both compute the same outputs.
# A chain model (empty priors, or <nnet-dir>/frame_subsampling_factor) gets vosk's chain settings
# (--acoustic-scale=1.0, --frame-subsampling-factor from that file) and is decoded as chain recipes
# do (--acwt 1.0 --post-decode-acwt 10.0; decode.sh reads the same frame_subsampling_factor file).
set -euo pipefail
fold_cmvn=false
. utils/parse_options.sh
if [ $# -ne 5 ]; then
  echo "Usage: $0 [--fold-cmvn true|false] <mfcc-config> <nnet-dir> <graph-dir> <data-dir> <decode-dir>" >&2
  exit 1
fi
mfcc_config=$1; nnet_dir=$2; graph=$3; data=$4; decode_dir=$5
for f in "$mfcc_config" "$nnet_dir/final.mdl" "$graph/HCLG.fst" "$graph/words.txt" "$data/wav.scp" "$data/text"; do
  [ -f "$f" ] || { echo "$0: no such file $f" >&2; exit 1; }
done
fold=(); $fold_cmvn && fold=(--fold-cmvn-from="$data")
python3 -m kaldi_avg.frontend.vosk_model make --mfcc-config="$mfcc_config" "${fold[@]}" \
  "$nnet_dir/final.mdl" "$graph" "$nnet_dir/vosk"
chain=$(python3 -m kaldi_avg.frontend.vosk_model is-chain "$nnet_dir/final.mdl")
chain_opts=(); post_decode_acwt=1.0
if [ "$chain" = true ]; then
  post_decode_acwt=10.0; chain_opts=(--acwt 1.0 --post-decode-acwt "$post_decode_acwt")
fi
# vosk runs the network looped over whole utterances, so our decode to compare with does the same
# (one chunk per utterance, no extra left context at its start); a chunked decode may differ.
nj=$(wc -l < "$data/spk2utt"); [ "$nj" -le 4 ] || nj=4
steps/nnet3/decode.sh --nj "$nj" "${chain_opts[@]}" --frames-per-chunk 1000000 --extra-left-context-initial 0 \
  "$graph" "$data" "$decode_dir"
python3 -m kaldi_avg.frontend.vosk_model decode --compare-with="$decode_dir" --post-decode-acwt="$post_decode_acwt" \
  "$nnet_dir/vosk" "$data" "$decode_dir/vosk"
