# How run.sh launches jobs (Kaldi convention). run.pl runs them on this machine; on a grid,
# use queue.pl or slurm.pl with Kaldi's utils.
export train_cmd="run.pl"
export decode_cmd="run.pl"
