#!/usr/bin/env bash
# Kaldi's steps/align_si.sh without Kaldi: [options] <data-dir> <lang-dir> <src-dir> <align-dir>.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.gmm_align.
exec python3 -m kaldi_avg.frontend.gmm_align "$@"
