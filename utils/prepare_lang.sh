#!/usr/bin/env bash
# Kaldi's utils/prepare_lang.sh without Kaldi: [options] <dict-src-dir> <oov-dict-entry> <tmp-dir>
# <lang-dir>.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.lang.
exec python3 -m kaldi_avg.frontend.lang "$@"
