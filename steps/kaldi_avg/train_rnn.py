#!/usr/bin/env python3
"""Drop-in for Kaldi's steps/nnet3/train_rnn.py (same options; see --help). The work is done by
kaldi_avg.train.launch, under the clone's venv/bin/python when python3 lacks torch
(kaldi_avg/install_steps.py). realpath: recipes reach this file through their steps symlink."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
from kaldi_avg.install_steps import use_clone_venv

if __name__ == "__main__":
    use_clone_venv()
    from kaldi_avg.train.cli import exit_process
    from kaldi_avg.train.launch import main
    exit_process(main(sys.argv[1:]))
