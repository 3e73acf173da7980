#!/usr/bin/env python3
"""Kaldi's steps/nnet3/chain/gen_topo.py without Kaldi: <nonsilence-phones-csl> <silence-phones-csl>,
the chain topology on stdout, byte for byte Kaldi's (kaldi_avg/chain/topology.py gen_topo). Runs
under the clone's venv/bin/python when python3 lacks its packages. realpath: recipes reach this
file through their steps symlink."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))))

if __name__ == "__main__":
    try:
        from kaldi_avg.chain.topology import gen_topo_main
    except ImportError as e:
        venv = os.path.join(sys.path[0], "venv")
        python = os.path.join(venv, "bin", "python")
        if os.access(python, os.X_OK) and not os.path.samefile(sys.prefix, venv):
            os.execv(python, [python, *sys.argv])
        raise SystemExit(f"{os.path.basename(sys.argv[0])}: error: {e} (python {sys.executable})") from None
    sys.exit(gen_topo_main(sys.argv[1:]))
