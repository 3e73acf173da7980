"""`kaldi-avg train` / `python -m kaldi_avg.train.cli`: one persistent rank of a training run.

Under an MPI launcher every rank runs `main` with a communicator from `kaldi_avg.parallel`
(`--mpi.backend`: mpi4py or torch.distributed). A rank that fails, dies or hangs ends the whole job
with a message naming it (`parallel.failure_guard`, `ExitMonitor`, `Watchdog`); no rank waits forever.
A rank started by steps/kaldi_avg/train_rnn.py never outlives it (`--mpi.launcher-heartbeat`:
`LauncherWatch`, PR_SET_PDEATHSIG), and one started by hand (srun, torchrun) takes the experiment
directory's lock at rank 0 (`RunLock`; the launcher holds it for the ranks it starts).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn

from ..errors import UsageError
from ..parallel import Communicator, ExitMonitor, LocalCommunicator, Watchdog, failure_guard, make_communicator
from ..parallel.torch_backend import PeerLost
from ..parallel.watchdog import LauncherWatch, die_with_parent
from .config import ConfigError
from .driver import run
from .expdir import ExpDir
from .options import DEFAULT_SCRIPT, SCRIPTS, get_parser
from .runlock import RunLock, RunLocked

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


def watch_launcher(args) -> LauncherWatch | None:
    """A rank started by train_rnn.py watches its heartbeat; one whose parent is the launcher
    (torchrun's agent; run.pl's or the queue's job shell, hydra's proxy) also dies with it."""
    if args.mpi_launcher_heartbeat is None:
        if os.environ.get("TORCHELASTIC_RUN_ID"):
            die_with_parent()
        return None
    die_with_parent()
    return LauncherWatch(args.mpi_launcher_heartbeat).start()


def lock_directory(args, comm: Communicator) -> RunLock | None:
    """Ranks started by hand: rank 0 takes the experiment directory's lock before any rank touches
    the directory, and every rank learns whether it got it (the refusal is rank 0's one line)."""
    if args.mpi_launcher_heartbeat is not None:   # the launcher holds it
        return None
    lock, refusal = None, None
    if comm.rank == 0:
        try:
            lock = RunLock.acquire(ExpDir(args.dir).lock, args.script)
        except RunLocked as e:
            refusal = str(e)
    verdict = comm.allgather_object(refusal)[0] if comm.size > 1 else refusal
    if verdict is not None:
        raise RunLocked(verdict) if comm.rank == 0 else SystemExit(1)
    return lock


def run_rank(args) -> int:
    launcher = watch_launcher(args)
    comm = make_rank_communicator(args)
    lock = lock_directory(args, comm)
    try:
        return run_locked_rank(args, comm, launcher)
    finally:
        if lock is not None:
            lock.release()


def run_locked_rank(args, comm: Communicator, launcher: LauncherWatch | None) -> int:
    if comm.size == 1:
        return run(0, 1, args, comm, local_rank(0))
    report_path = ExpDir(args.dir).rank_failed(comm.rank)
    os.makedirs(os.path.dirname(report_path), exist_ok=True)
    if os.path.exists(report_path):
        os.remove(report_path)
    monitor = ExitMonitor(comm, report_path)
    if launcher is not None:
        launcher.who = f"rank {comm.rank}/{comm.size} (pid {os.getpid()})"
        launcher.before_exit.append(monitor.close)   # the launcher's death is the whole story
    try:
        with failure_guard(comm, report_path, verbose=args.verbose > 0), \
                Watchdog(comm, timeout_s=30.0, report_path=report_path):
            code = run(comm.rank, comm.size, args, comm, local_rank(comm.rank))
    except PeerLost as lost:   # another rank's process ended: its report says why, this is no verdict
        print(f"kaldi_avg.parallel: rank {comm.rank}/{comm.size}: {lost}", file=sys.stderr, flush=True)
        code = 1
    monitor.close()
    return code


def exit_process(code: int) -> NoReturn:
    """Ends this process with `code` once its work is done, as the interpreter would (non-daemon
    threads joined, atexit handlers run, output flushed, MPI finalized) but without tearing down
    torch's modules one by one, which takes about a second. For the scripts' `__main__` only."""
    import atexit
    import threading
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        mpi.Finalize()
    os._exit(code)


if __name__ == "__main__":
    exit_process(main())
