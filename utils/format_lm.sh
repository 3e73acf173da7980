#!/usr/bin/env bash
# Kaldi's utils/format_lm.sh without Kaldi: <lang-dir> <arpa-LM> <lexicon> <out-dir>.
# Copies <lang-dir> to <out-dir> and writes G.fst from the (optionally gzipped) ARPA file with
# arpa2fst --disambig-symbol=#0 --read-symbol-table=words.txt. The lexicon argument is only
# checked to exist, as the words come from <lang-dir>/words.txt. Run with the kaldi-avg venv's
# python3 on PATH. Grammars instead of an LM: python -m kaldi_avg.frontend.grammar --help.
set -euo pipefail
if [ $# -ne 4 ]; then
  echo "Usage: $0 <lang_dir> <arpa-LM> <lexicon> <out_dir>" >&2
  echo "e.g.: $0 data/lang data/local/lm/foo.kn.gz data/local/dict/lexicon.txt data/lang_test" >&2
  exit 1
fi
lang_dir=$1; lm=$2; lexicon=$3; out_dir=$4
for f in "$lang_dir/words.txt" "$lm" "$lexicon"; do
  [ -f "$f" ] || { echo "$0: expected file $f to exist" >&2; exit 1; }
done
exec python3 -m kaldi_avg.frontend.grammar --arpa "$lm" "$lang_dir" "$out_dir"
