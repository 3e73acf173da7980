#!/usr/bin/env bash
# local/prepare_data.sh [synth options] <corpus-dir> <data-dir>
# Synthesises the digit-string corpus with espeak-ng into <corpus-dir> and writes the Kaldi
# data dirs <data-dir>/train and <data-dir>/test. Options (with defaults):
#   --seed 0 --num-train-speakers 24 --num-test-speakers 6 --num-train-utts 600
#   --num-test-utts 120 --min-digits 1 --max-digits 7 --oh-prob 0 --snr-min 15 --snr-max 40
#   --sample-rate 8000 --nj 2 --voices <comma-separated espeak-ng variants>
set -euo pipefail
exec python3 -m kaldi_avg.frontend.synth "$@"
