#!/usr/bin/env bash
# utt2spk_to_spk2utt.pl [<utt2spk>] > spk2utt
# Kaldi's utility, as a wrapper over kaldi_avg.frontend.dataprep (reads stdin without a file).
# Speakers and their utterances come out in C order (the same as Kaldi's first-appearance
# order for a sorted, speaker-prefixed utt2spk).
set -euo pipefail
exec python3 -m kaldi_avg.frontend.dataprep utt2spk-to-spk2utt "$@"
