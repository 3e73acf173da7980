#!/usr/bin/env bash
# Command 1 of the README: set up a fresh machine and run the embedded recipe end to end
# (synthesised speech -> MFCC -> GMM alignments -> LSTM trained on 2 MPI ranks -> final.mdl
# -> decoded words + WER, checked with vosk; then a chain (LF-MMI) TDNN-LSTM the same way).
# Extra options go to run.sh, e.g. --size tiny.
set -euo pipefail
cd "$(dirname "$0")"
tools/install.sh
cd egs/synth_digits/s5
start=$(date +%s)
mkdir -p exp
./run.sh "$@" 2>&1 | tee exp/demo.log   # the summary below quotes its vosk lines
echo
echo "== kaldi-avg demo (egs/synth_digits/s5), $(( $(date +%s) - start )) s in all =="
for d in exp/mono/decode_test exp/lstm/decode_test exp/chain/tdnn_lstm1a/decode_test; do
  [ -d "$d" ] && echo "$d: $(grep -h '%WER' "$d"/wer_* | sort -t' ' -k2,2n | head -n 1)"
done
# vosk (Kaldi's own code) on each final.mdl, and its agreement with our looped decode
grep '^vosk: %WER' exp/demo.log || true
# the iterations' wall-clock seconds (log/data_wait.log; accuracy.report sums Kaldi's whole-second accounting)
[ -f exp/lstm/log/data_wait.log ] && awk '{for (i = 1; i < NF; i++) if ($i == "iteration-seconds") s += $(i + 1); n++}
  END {printf "LSTM training: %d iterations in %.1f s\n", n, s}' exp/lstm/log/data_wait.log
[ -f exp/chain/tdnn_lstm1a/log/data_wait.log ] && awk '{for (i = 1; i < NF; i++) if ($i == "iteration-seconds") s += $(i + 1); n++}
  END {printf "chain training: %d iterations in %.1f s\n", n, s}' exp/chain/tdnn_lstm1a/log/data_wait.log
echo "models: $PWD/exp/lstm/final.mdl, $PWD/exp/chain/tdnn_lstm1a/final.mdl"
echo "curves: $PWD/exp/lstm/progress.png, $PWD/exp/chain/tdnn_lstm1a/progress.png"
