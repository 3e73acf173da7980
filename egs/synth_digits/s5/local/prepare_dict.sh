#!/usr/bin/env bash
# local/prepare_dict.sh <dict-dir> <data-dir> [<data-dir> ...]
# Writes the dict dir for utils/prepare_lang.sh (lexicon.txt, nonsilence_phones.txt,
# silence_phones.txt, optional_silence.txt, extra_questions.txt): CMU phones for the digit
# words found in the data dirs' text files, SIL as optional silence, <unk> as SPN.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "Usage: $0 <dict-dir> <data-dir> [<data-dir> ...]" >&2
  exit 1
fi
dict=$1; shift
texts=()
for d in "$@"; do texts+=("$d/text"); done
exec python3 -m kaldi_avg.frontend.dataprep prepare-dict "$dict" "${texts[@]}"
