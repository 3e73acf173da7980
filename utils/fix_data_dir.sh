#!/usr/bin/env bash
# fix_data_dir.sh [--utt-extra-files "<f1> <f2>"] [--spk-extra-files "<f3>"] <data-dir>
# Keeps only the utterances present in every per-utterance file (and whose speaker is in
# every per-speaker file), sorts the files and regenerates spk2utt, as Kaldi's script does;
# what was removed, and why, is reported. The originals go to <data-dir>/.backup/.
set -euo pipefail
exec python3 -m kaldi_avg.frontend.dataprep fix-data-dir "$@"
