"""steps/kaldi_avg/train_rnn.py: Kaldi's train_rnn.py command line, launching the persistent ranks.

With --mpi.num-ranks=N > 1 it runs `<launcher> -n N python -m kaldi_avg.train.cli <args>` (ranks
live for the whole run); with N == 1 it trains in this process, no MPI needed. When the launcher
fails, the reports that failed ranks left in log/rank.R.failed are printed: the launcher may have
killed a rank before forwarding its stderr.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

from .cli import failure_report_path
from .cli import main as rank_main
from .options import get_parser

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def print_failure_reports(exp_dir: str, num_ranks: int, since: float) -> None:
    """Repeat what failed ranks wrote during this run."""
    for rank in range(num_ranks):
        path = failure_report_path(exp_dir, rank)
        if os.path.exists(path) and os.path.getmtime(path) >= since:
            with open(path) as report:
                sys.stderr.write(f"# {path}:\n{report.read()}")


def resolve_launcher(name: str) -> str:
    """A bare launcher name: the venv's own (mpi4py's MPI) first, then PATH."""
    if os.path.sep in name:
        return name
    here = os.path.join(os.path.dirname(sys.executable), name)
    return here if os.path.exists(here) else (shutil.which(name) or name)


def main(argv: list[str]) -> int:
    args = get_parser().parse_args(argv)   # unknown options fail here, listing the supported ones
    n = args.mpi_num_ranks
    if n <= 1:
        return rank_main(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(args.num_threads))
    cmd = [resolve_launcher(args.mpi_launcher), "-n", str(n), sys.executable, "-m", "kaldi_avg.train.cli", *argv]
    print("# " + shlex.join(cmd), file=sys.stderr, flush=True)
    started = time.time()
    code = subprocess.call(cmd, env=env)
    if code != 0:
        print_failure_reports(args.dir, n, started)
    return code
