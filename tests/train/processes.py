"""Finding the processes of a training run from /proc, for the tests that signal or count them."""
from __future__ import annotations

import os


def _read(pid: str, what: str) -> bytes | None:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read()
    except OSError:
        return None


def processes_mentioning(text: str) -> list[int]:
    """Every process (but this one) whose command line contains `text`."""
    return [int(pid) for pid in os.listdir("/proc")
            if pid.isdigit() and int(pid) != os.getpid() and text.encode() in (_read(pid, "cmdline") or b"")]


def mpi_rank_process(text: str, rank: int) -> int | None:
    """The training process of MPI rank `rank` (PMI_RANK in its environment) whose command line contains `text`."""
    for pid in processes_mentioning(text):
        cmdline, environ = _read(str(pid), "cmdline") or b"", _read(str(pid), "environ") or b""
        if b"kaldi_avg.train.cli" in cmdline and f"PMI_RANK={rank}".encode() in environ.split(b"\0"):
            return pid
    return None
