#!/usr/bin/env bash
# Kaldi's utils/mkgraph.sh without Kaldi: [--mono] <lang-dir> <model-dir> <graph-dir>. HCLG.fst is
# written as a const FST (what Kaldi and vosk read) plus HCLG.vector.fst for kaldifst.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.frontend.graph.
exec python3 -m kaldi_avg.frontend.graph "$@"
