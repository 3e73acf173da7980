"""The experiments of docs/algorithms.md 3.3 at small scale (`kaldi-avg experiment`).

Modules:
  prepare     features and alignments from the repository's recipes (egs/fsdd, egs/synth_digits), cached
  dataset     the source, worker shards, held-out set and LSTM xconfig every run shares
  runner      one simulated run: real Learners driven by a kaldi_avg.parallel algorithm in the Simulator
  matrix      the runs of E1-E5 (quick and full grids)
  commbench   E6: α, β and collective times of the real communicators
  tables, plots, command   the summary tables, the PNGs, the command line
"""
