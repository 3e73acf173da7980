#!/usr/bin/env python3
"""Drop-in for Kaldi's steps/nnet3/train_rnn.py: same command line (options that need egs
are accepted and reported as ignored), plus --averaging.* and --mpi.{launcher,num-ranks}.

With --mpi.num-ranks=N > 1 it launches `<launcher> -n N python -m kaldi_avg.train.cli <args>`
(ranks live for the whole run); with N == 1 it trains in this process, no MPI needed.
"""
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kaldi_avg.train.cli import failure_report_path  # noqa: E402
from kaldi_avg.train.driver import get_parser  # noqa: E402


def print_failure_reports(exp_dir, num_ranks, since):
    """Repeat what failed ranks wrote: the launcher may have killed them before forwarding stderr."""
    for rank in range(num_ranks):
        path = failure_report_path(exp_dir, rank)
        if os.path.exists(path) and os.path.getmtime(path) >= since:
            with open(path) as report:
                sys.stderr.write(f"# {path}:\n{report.read()}")


def main(argv):
    args = get_parser().parse_args(argv)  # unknown options fail here, listing the supported ones
    n = args.mpi_num_ranks
    if n <= 1:
        from kaldi_avg.train.cli import main as rank_main
        return rank_main(argv)
    launcher = args.mpi_launcher
    if not os.path.sep in launcher:
        here = os.path.join(os.path.dirname(sys.executable), launcher)
        launcher = here if os.path.exists(here) else (shutil.which(launcher) or launcher)
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(args.num_threads))
    cmd = [launcher, "-n", str(n), sys.executable, "-m", "kaldi_avg.train.cli"] + list(argv)
    print("# " + " ".join(cmd), file=sys.stderr, flush=True)
    started = time.time()
    code = subprocess.call(cmd, env=env)
    if code != 0:
        print_failure_reports(args.dir, n, started)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
