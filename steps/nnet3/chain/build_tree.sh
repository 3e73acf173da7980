#!/usr/bin/env bash
# Kaldi's steps/nnet3/chain/build_tree.sh without Kaldi:
#   [--frame-subsampling-factor 3] [--context-opts ...] [--cmd ...] <#leaves> <data> <lang> <ali-dir> <tree-dir>
# The tree is a monophone one whatever --context-opts and <#leaves> ask for (said on stderr), and
# <tree-dir>/final.mdl is the chain transition model alone (what train.py and mkgraph.sh read from
# it); kaldi_avg/chain/build_tree.py says what else differs.
# Kaldi's command line and options; run from a recipe directory with the kaldi-avg venv's
# python3 on PATH. The work is done by python -m kaldi_avg.chain.build_tree.
exec python3 -m kaldi_avg.chain.build_tree "$@"
