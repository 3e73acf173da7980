"""`kaldi-avg train` / `python -m kaldi_avg.train.cli`: one persistent rank of a training run.

Under an MPI launcher every rank runs `main` with a communicator from `kaldi_avg.parallel`
(`--mpi.backend`: mpi4py or torch.distributed). A rank that fails, dies or hangs ends the whole job
with a message naming it (`parallel.failure_guard`, `ExitMonitor`, `Watchdog`); no rank waits forever.
"""
from __future__ import annotations

import os
import sys

from ..parallel import ExitMonitor, LocalCommunicator, Watchdog, failure_guard, make_communicator
from .config import ConfigError
from .driver import run
from .options import get_parser

# Set by mpiexec (MPICH/hydra, srun --mpi=pmi2), Open MPI's mpirun, and srun job steps.
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")


def launched_by_mpi() -> bool:
    """Whether a launcher (mpiexec, mpirun, srun) started this process as one rank of several."""
    return any(int(os.environ.get(var, "1")) > 1 for var in _LAUNCHER_SIZE_VARIABLES)


def failure_report_path(exp_dir: str, rank: int) -> str:
    """Where rank `rank` leaves its failure message (read by steps/kaldi_avg/train_rnn.py)."""
    return os.path.join(exp_dir, "log", f"rank.{rank}.failed")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return run_rank(args)
    except ConfigError as e:   # a misconfiguration: one line, no traceback
        print(f"train_rnn.py: error: {e}", file=sys.stderr)
        return 1


def run_rank(args) -> int:
    comm = make_communicator(args.mpi_backend) if launched_by_mpi() else LocalCommunicator()
    if comm.size == 1:
        return run(0, 1, args, comm)
    monitor = ExitMonitor(comm)
    report_path = failure_report_path(args.dir, comm.rank)
    os.makedirs(os.path.dirname(report_path), exist_ok=True)
    if os.path.exists(report_path):
        os.remove(report_path)
    with failure_guard(comm, report_path), Watchdog(comm, timeout_s=30.0, report_path=report_path):
        code = run(comm.rank, comm.size, args, comm)
    monitor.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
