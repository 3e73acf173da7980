"""`cli.exit_process`, how the scripts and the ranks end (issue 25: without the interpreter's
second of torch teardown): the exit code, atexit handlers, non-daemon threads and buffered output
as a normal exit has them, and MPI finalized under mpiexec."""
import os
import shutil
import subprocess
import sys

import pytest

PROGRAM = """
import atexit, sys, threading, time
from kaldi_avg.train.cli import exit_process
atexit.register(lambda: print("atexit ran", flush=True))
threading.Thread(target=lambda: (time.sleep(0.3), print("thread finished", flush=True))).start()
sys.stdout.write("buffered ")
sys.stderr.write("to stderr")
exit_process(int(sys.argv[1]))
"""

MPI_PROGRAM = """
import os
from mpi4py import MPI
from kaldi_avg.train.cli import exit_process
MPI.COMM_WORLD.Barrier()
# One write(2) per rank: print() may issue several (unbuffered CI), which mpiexec interleaves.
os.write(1, b"rank %d\\n" % MPI.COMM_WORLD.Get_rank())
exit_process(0)
"""


@pytest.mark.parametrize("code", [0, 3])
def test_the_code_the_handlers_the_threads_and_the_output(code):
    r = subprocess.run([sys.executable, "-c", PROGRAM, str(code)], capture_output=True, text=True, timeout=120)
    assert r.returncode == code
    assert r.stdout.split() == ["buffered", "thread", "finished", "atexit", "ran"]
    assert r.stderr == "to stderr"


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_ranks_under_mpiexec_end_with_mpi_finalized():
    pytest.importorskip("mpi4py")
    r = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", MPI_PROGRAM], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split("\n")[:2]) == ["rank 0", "rank 1"]
