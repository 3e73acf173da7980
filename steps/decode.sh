#!/usr/bin/env bash
# Kaldi's steps/decode.sh (GMM) without Kaldi: [options] <graph-dir> <data-dir> <decode-dir>; the
# model is <decode-dir>/../final.mdl.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.decode_steps.
exec python3 -m kaldi_avg.frontend.decode_steps gmm "$@"
