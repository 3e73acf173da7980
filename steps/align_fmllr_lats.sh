#!/usr/bin/env bash
# Kaldi's steps/align_fmllr_lats.sh without Kaldi: [options] <data-dir> <lang-dir> <src-dir> <lat-dir>.
# Lattices of the training transcripts (lat.JOB.gz, phone-determinized as gmm-latgen-faster
# --word-determinize=false writes them) from a speaker-independent GMM: no fMLLR, kaldi-avg's
# GMMs have no transforms (kaldi_avg/frontend/align_lats.py says what differs).
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.align_lats.
exec python3 -m kaldi_avg.frontend.align_lats "$@"
