#!/usr/bin/env bash
# split_data.sh <data-dir> <num-to-split>
# Writes <data-dir>/split<N>/{1..N}/, each speaker in one part, parts balanced by utterance
# count, as Kaldi's script does (--per-utt is not supported). Wrapper over
# kaldi_avg.kaldi.datadir.split_data.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "Usage: $0 <data-dir> <num-to-split>" >&2
  exit 1
fi
exec python3 -m kaldi_avg.frontend.dataprep split-data "$@"
