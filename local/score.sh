#!/usr/bin/env bash
# Kaldi's steps/score_kaldi.sh (what recipes run as local/score.sh): [options] <data-dir> <lang-
# or-graph-dir> <decode-dir>.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.score.
exec python3 -m kaldi_avg.frontend.score "$@"
