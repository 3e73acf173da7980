"""A 2-rank job in which rank 1 fails: `mpiexec -n 2 python tests/parallel/mpi_failure.py MODE`.

Rank 0 keeps averaging; at step 20 rank 1 raises (MODE=exception), exits without a word (exit),
is killed by a signal (kill) or hangs with its threads alive (hang). The test expects every rank to
end non-zero within seconds, with a message naming rank 1 (for a hang: the stuck operation).
"""
from __future__ import annotations

import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from kaldi_avg.parallel import ExitMonitor, Watchdog, failure_guard, make_communicator


def fail(mode: str) -> None:
    if mode == "exception":
        raise RuntimeError("simulated failure in rank 1")
    if mode == "exit":
        os._exit(3)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hang":
        time.sleep(3600)
    raise ValueError(f"unknown mode {mode}")


def main() -> None:
    mode = sys.argv[1]
    comm = make_communicator("mpi")
    ExitMonitor(comm)
    buffer = torch.ones(1000)
    with failure_guard(comm), Watchdog(comm, interval_s=0.2, timeout_s=10.0, op_timeout_s=4.0):
        for step in range(100_000):
            if comm.rank == 1 and step == 20:
                fail(mode)
            comm.allreduce_sum_(buffer.fill_(1.0))
            time.sleep(0.001)
    print("unreachable: the job should have been aborted", flush=True)


if __name__ == "__main__":
    main()
