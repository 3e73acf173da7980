#!/usr/bin/env bash
# local/vosk_check.sh [--fold-cmvn true|false] <mfcc-config> <nnet-dir> <graph-dir> <data-dir> <decode-dir>
# The independent real-Kaldi check: packs <nnet-dir>/final.mdl, the graph and the feature
# config into a vosk model directory (<nnet-dir>/vosk), decodes <data-dir>'s recordings with
# vosk (Kaldi's online2/nnet3 code), scores them against <data-dir>/text and compares the
# hypotheses with <decode-dir>, a decode it makes with steps/nnet3/decode.sh computing the network
# as vosk does (looped over whole utterances). <decode-dir> must be inside <nnet-dir>. vosk
# applies no CMVN: for a model trained with per-speaker CMVN, --fold-cmvn true folds the CMVN of
# <data-dir>'s only speaker into the network vosk gets, so both compute the same outputs.
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
# vosk runs the network looped over whole utterances, so our decode to compare with does the same
# (one chunk per utterance, no extra left context at its start); a chunked decode may differ.
nj=$(wc -l < "$data/spk2utt"); [ "$nj" -le 4 ] || nj=4
steps/nnet3/decode.sh --nj "$nj" --frames-per-chunk 1000000 --extra-left-context-initial 0 \
  "$graph" "$data" "$decode_dir"
python3 -m kaldi_avg.frontend.vosk_model decode --compare-with="$decode_dir" \
  "$nnet_dir/vosk" "$data" "$decode_dir/vosk"
