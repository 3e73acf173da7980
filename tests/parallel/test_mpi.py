"""Real 2-rank runs under the venv's mpiexec (MPICH): the oracles, and a failing rank ending the job."""
from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .mpi_checks import CHECKS

HERE = Path(__file__).resolve().parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or not MPIEXEC.exists(),
    reason="needs mpi4py and the mpiexec that belongs to its MPI library (venv/bin/mpiexec)")


def run_two_ranks(script: str, *args: str, timeout: float) -> tuple[int, str, float]:
    """(exit status, stdout+stderr, seconds); the whole process group is killed on timeout."""
    command = [str(MPIEXEC), "-n", "2", sys.executable, str(HERE / script), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{script} {' '.join(args)} did not finish within {timeout} s:\n{output}")
    return process.returncode, output, time.monotonic() - start


@pytest.mark.parametrize("backend", ["mpi", "torch"])
def test_oracles_on_two_real_ranks(backend):
    status, output, _ = run_two_ranks("mpi_checks.py", backend, timeout=120)
    assert status == 0, output
    for check in CHECKS:
        assert f"ok {check.__name__}" in output, output


def first_to_end(output: str) -> str:
    """The rank whose exit monitor reported the earliest end."""
    ends = re.findall(r"rank (\d+)/2 \(pid \d+ on .*?\) ended without finishing at (\S+)", output)
    assert ends, output
    return min(ends, key=lambda end: end[1])[0]


@pytest.mark.parametrize("mode", ["exception", "exit", "kill", "hang"])
def test_a_failing_rank_ends_every_rank_with_a_message_naming_it(mode):
    status, output, seconds = run_two_ranks("mpi_failure.py", mode, timeout=60)
    assert status != 0, output
    assert seconds < 30, output
    assert "unreachable" not in output
    if mode == "exception":
        assert "rank 1/2 failed (main): RuntimeError: simulated failure in rank 1" in output
    elif mode in ("exit", "kill"):
        assert first_to_end(output) == "1", output
    else:
        assert "allreduce has waited" in output and "rank 1 had completed" in output, output
