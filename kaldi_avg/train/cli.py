"""`kaldi-avg train` / `python -m kaldi_avg.train.cli`: one persistent rank of a training run.

Under an MPI launcher every rank runs `main` with a communicator from `kaldi_avg.parallel`
(`--mpi.backend`: mpi4py or torch.distributed). A rank that fails, dies or hangs ends the whole job
with a message naming it (`parallel.failure_guard`, `ExitMonitor`, `Watchdog`); no rank waits forever.
"""
from __future__ import annotations

import os
import sys

from ..errors import UsageError
from ..parallel import Communicator, ExitMonitor, LocalCommunicator, Watchdog, failure_guard, make_communicator
from .config import ConfigError
from .driver import run
from .expdir import ExpDir
from .options import DEFAULT_SCRIPT, SCRIPTS, get_parser

# The world size as launchers announce it: torchrun, mpiexec (MPICH/hydra), Open MPI's mpirun,
# PMIx launchers, and srun job steps.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS")


def launcher_world_size() -> tuple[int, str] | None:
    """(size, variable) of the first launcher variable that says this process is one of several."""
    for var in WORLD_SIZE_VARIABLES:
        if int(os.environ.get(var, "1")) > 1:
            return int(os.environ[var]), var
    return None


def make_rank_communicator(args) -> Communicator:
    """This rank's communicator, checked against what the launch says: never train silent copies."""
    if args.mpi_job is not None:   # one job of a Kaldi `$cmd JOB=1:N` array (kaldi_avg/train/launch.py)
        if args.mpi_num_ranks is None or args.mpi_rendezvous is None:
            raise ConfigError("--mpi.job needs --mpi.num-ranks and --mpi.rendezvous (set by --mpi.launcher=cmd)")
        from ..parallel.torch_backend import TorchDistCommunicator
        return TorchDistCommunicator.from_rendezvous_file(args.mpi_rendezvous, args.mpi_job - 1, args.mpi_num_ranks)
    announced = launcher_world_size()
    backend = args.mpi_backend or ("torch" if os.environ.get("TORCHELASTIC_RUN_ID") else "mpi")
    comm = make_communicator(backend) if announced else LocalCommunicator()
    if announced and comm.size != announced[0]:
        size, var = announced
        raise ConfigError(f"the launcher started {size} processes ({var}={size}) but the --mpi.backend="
                          f"{backend} communicator joined {comm.size}: with torchrun use "
                          "--mpi.backend=torch; with srun or mpirun use an MPI matching mpi4py's (srun --mpi=pmi2 "
                          "or pmix); the processes would otherwise train separate copies")
    if args.mpi_num_ranks is not None and args.mpi_num_ranks != comm.size:
        from ..parallel.mpi_backend import mpi4py_missing  # here: importing this module needs no mpi4py
        missing = None if announced else mpi4py_missing()   # the [mpi] extra: no mpiexec, no mpi4py
        raise ConfigError(f"--mpi.num-ranks={args.mpi_num_ranks} but this process is one of {comm.size} "
                          f"({'as the launcher says' if announced else 'no launcher environment found'})"
                          + (f"; {missing}" if missing else ""))
    return comm


def local_rank(rank: int) -> int:
    """This rank's index on its node, as the launcher says (torchrun, hydra, Open MPI, Slurm)."""
    for var in ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"):
        if var in os.environ:
            return int(os.environ[var])
    return rank


def main(argv: list[str] | None = None) -> int:
    """One rank: `[script] [options]`, the script train_rnn.py (the default) or train_dnn.py."""
    argv = list(sys.argv[1:] if argv is None else argv)
    script = argv.pop(0) if argv and argv[0] in SCRIPTS else DEFAULT_SCRIPT
    args = get_parser(script).parse_args(argv)
    try:
        return run_rank(args)
    except UsageError as e:   # bad options or data: one line naming what is wrong
        if args.verbose:
            raise
        print(f"{script}: error: {e}", file=sys.stderr)
        return 1


def run_rank(args) -> int:
    comm = make_rank_communicator(args)
    if comm.size == 1:
        return run(0, 1, args, comm, local_rank(0))
    report_path = ExpDir(args.dir).rank_failed(comm.rank)
    os.makedirs(os.path.dirname(report_path), exist_ok=True)
    if os.path.exists(report_path):
        os.remove(report_path)
    monitor = ExitMonitor(comm, report_path)
    with failure_guard(comm, report_path, verbose=args.verbose > 0), \
            Watchdog(comm, timeout_s=30.0, report_path=report_path):
        code = run(comm.rank, comm.size, args, comm, local_rank(comm.rank))
    monitor.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
