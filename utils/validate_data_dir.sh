#!/usr/bin/env bash
# validate_data_dir.sh [--no-feats] [--no-text] [--no-wav] [--no-spk-sort] [--non-print] <data-dir>
# Checks a Kaldi data directory as Kaldi's script does (sorted, consistent utt2spk/spk2utt,
# text, wav.scp/segments, feats.scp, cmvn.scp, utt2dur, utt2num_frames); the first problem is
# reported with its file and line. Wrapper over kaldi_avg.kaldi.datadir.DataDir.validate.
set -euo pipefail
exec python3 -m kaldi_avg.frontend.dataprep validate-data-dir "$@"
