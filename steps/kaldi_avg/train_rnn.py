#!/usr/bin/env python3
"""Drop-in for Kaldi's steps/nnet3/train_rnn.py (same options; see --help). The work is done by
kaldi_avg.train.launch."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from kaldi_avg.train.launch import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
