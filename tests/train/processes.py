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


def rank_process(text: str, rank: int) -> int | None:
    """The training process of rank `rank` whose command line contains `text`: MPI's (PMI_RANK) or
    an array job's (--mpi.job=rank+1, kaldi_avg/train/launch.py's --mpi.launcher=cmd)."""
    for pid in processes_mentioning(text):
        cmdline = (_read(str(pid), "cmdline") or b"").split(b"\0")
        if b"kaldi_avg.train.cli" in cmdline and f"--mpi.job={rank + 1}".encode() in cmdline:
            return pid
    return mpi_rank_process(text, rank)


def _address(hex_address: str) -> str:
    """/proc/net/tcp{,6}'s hex address (32-bit words in host order, little-endian here) as text."""
    import ipaddress
    raw = bytes.fromhex(hex_address)
    host_order = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(host_order)
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


def listening_sockets(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in the listening state that one of `pids` holds open."""
    inodes = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:   # 0A: TCP_LISTEN
                    address, port = fields[1].split(":")
                    out.append((_address(address), int(port, 16)))
    return out
