#!/usr/bin/env bash
# local/prepare_data.sh [--test-speakers lucas] <fsdd-dir> <data-dir>
# Kaldi data dirs for the Free Spoken Digit Dataset: <data-dir>/train (george, jackson,
# nicolas, theo, yweweler) and <data-dir>/test (lucas), one digit word per utterance.
set -euo pipefail
exec python3 -m kaldi_avg.frontend.fsdd "$@"
