#!/usr/bin/env bash
# Kaldi's steps/nnet3/decode.sh without Kaldi: [options] <graph-dir> <data-dir> <decode-dir>; the
# model is <decode-dir>/../final.mdl, network outputs come from kaldi-avg compute.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.decode_steps.
exec python3 -m kaldi_avg.frontend.decode_steps nnet3 "$@"
