# Sourced by run.sh from the recipe directory (egs/<corpus>/s5).
# Puts kaldi-avg's venv and package first, and points steps/ and utils/ at:
#   KALDI_ROOT unset:  kaldi-avg's pip-only stand-ins (../../../steps, ../../../utils);
#   KALDI_ROOT set:    Kaldi's own $KALDI_ROOT/egs/wsj/s5/{steps,utils}, except steps/kaldi_avg/,
#                      which stays kaldi-avg's (steps/ is then a generated folder of links).
# Switching is safe in both directions: path.sh only replaces links and folders it made.

kaldi_avg_root=$(cd ../../.. && pwd)
if [ -x "$kaldi_avg_root/venv/bin/python3" ]; then
  export PATH="$kaldi_avg_root/venv/bin:$PATH"
fi
export PYTHONPATH="$kaldi_avg_root${PYTHONPATH:+:$PYTHONPATH}"
export LC_ALL=C

kaldi_avg_marker=.made-by-path.sh

kaldi_avg_clear() {  # removes ./$1 if it is a link or a folder made by this script
  if [ -L "$1" ]; then rm -f "$1"
  elif [ -d "$1" ]; then
    if [ ! -f "$1/$kaldi_avg_marker" ]; then
      echo "path.sh: $PWD/$1 is a real folder, not replacing it" >&2
      return 1
    fi
    rm -r "$1"
  fi
}

kaldi_avg_link() {  # <name> <target>: makes ./<name> a symlink to <target>
  if [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ]; then return 0; fi
  kaldi_avg_clear "$1" && ln -s "$2" "$1"
}

if [ -n "${KALDI_ROOT:-}" ]; then
  kaldi_wsj=$KALDI_ROOT/egs/wsj/s5
  if [ ! -d "$kaldi_wsj/steps" ] || [ ! -f "$KALDI_ROOT/tools/config/common_path.sh" ]; then
    echo "path.sh: KALDI_ROOT=$KALDI_ROOT is not a built Kaldi (no egs/wsj/s5/steps or tools/config/common_path.sh)" >&2
    return 1
  fi
  . "$KALDI_ROOT/tools/config/common_path.sh"
  export PATH="$KALDI_ROOT/tools/openfst/bin:$PATH"
  kaldi_avg_link utils "$kaldi_wsj/utils"
  if [ ! -f "steps/$kaldi_avg_marker" ] || [ "$(cat "steps/$kaldi_avg_marker")" != "$KALDI_ROOT" ]; then
    kaldi_avg_clear steps
    mkdir steps
    for entry in "$kaldi_wsj"/steps/*; do
      [ "$(basename "$entry")" = kaldi_avg ] || ln -s "$entry" steps/
    done
    ln -s "$kaldi_avg_root/steps/kaldi_avg" steps/kaldi_avg
    echo "$KALDI_ROOT" > "steps/$kaldi_avg_marker"
  fi
else
  kaldi_avg_link utils ../../../utils
  kaldi_avg_link steps ../../../steps
fi
export PATH="$PWD/utils:$PATH"
unset -f kaldi_avg_clear kaldi_avg_link
unset kaldi_avg_marker kaldi_wsj
