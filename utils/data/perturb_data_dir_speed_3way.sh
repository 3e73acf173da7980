#!/usr/bin/env bash
# perturb_data_dir_speed_3way.sh [--include-spk-prefix true|false] <srcdir> <destdir>
# Kaldi's standard 3-way speed perturbation: the original utterances plus copies at 0.9x and
# 1.1x speed, piped through sox in wav.scp (sp0.9-/sp1.1- prefixes on utterance and speaker
# ids, utt2uniq back to the source utterance). Needs sox on the PATH.
set -euo pipefail
exec python3 -m kaldi_avg.frontend.perturb "$@"
