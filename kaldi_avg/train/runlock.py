"""One run per experiment directory: `RunLock` holds `<dir>/kaldi_avg.lock` (ExpDir.lock) while a run uses it.

The lock is taken by steps/kaldi_avg/train_rnn.py (train_dnn.py) before it starts any rank, or, when the
ranks were started by hand (srun, torchrun, `kaldi-avg train`), by rank 0. It holds one JSON line: the
holder's pid, host, the process's start time (/proc/<pid>/stat, so a reused pid is not mistaken for
the holder) and the wall time it started. A second run on the same directory is refused in one line
naming the holder. The holder refreshes the file's mtime every `REFRESH_S` seconds and removes it on
any exit it lives through (return, exception, signal handled by the launcher).

A lock whose holder is gone (SIGKILL, a crash, os._exit after an abort) is stale and is replaced,
with one line saying so: on the same host when its pid is not running (or runs another process); on
another host, where pids say nothing, when its mtime does not change for `STALE_AFTER_S` seconds as
this process's own clock measures it (never comparing clocks across hosts).
"""
from __future__ import annotations

import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid

from ..errors import UsageError

REFRESH_S = 2.0         # how often the holder touches the lock
STALE_AFTER_S = 15.0    # another host's lock unchanged this long (by our clock) is stale


class RunLocked(UsageError):
    """Another run holds the experiment directory."""


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (/proc/<pid>/stat field 22); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else int(fields[19])


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            holder = json.loads(f.read())
        return holder if isinstance(holder, dict) and {"pid", "host", "start_ticks"} <= holder.keys() else None
    except (OSError, ValueError):
        return None


def _mtime_ns(path: str) -> int | None:
    try:
        with open(path, "rb") as f:   # open, then fstat: NFS revalidates the attributes on open
            return os.fstat(f.fileno()).st_mtime_ns
    except OSError:
        return None


def describe(holder: dict) -> str:
    program, started = holder.get("program", "?"), holder.get("started", "?")
    return f"pid {holder['pid']} on {holder['host']} ({program}, started {started})"


class RunLock:
    """The lock of one run; `RunLock.acquire(dir_lock_path, program)` takes it or raises `RunLocked`."""

    def __init__(self, path: str, holder: dict) -> None:
        self.path = path
        self.holder = holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="kaldi-avg-run-lock", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, path: str, program: str) -> RunLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "start_ticks": process_start_ticks(os.getpid()),
              "started": datetime.datetime.now().isoformat(timespec="seconds"), "program": program}
        for _ in range(5):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read(path)
                if holder is not None:
                    stale = _is_stale(path, holder)
                else:   # being written, or garbage (a writer that died mid-write)
                    stale = _unchanged_for(path, 1.0)
                    holder = {"pid": "?", "host": "?", "start_ticks": None}
                if not stale:
                    raise RunLocked(f"{os.path.dirname(path) or '.'} is in use by another run: {describe(holder)} "
                                    f"(lock {path}; wait for that run to end or stop it)") from None
                if _take_over(path, holder):
                    print(f"{program}: replaced the stale lock {path} of {describe(holder)}: that process is gone",
                          file=sys.stderr, flush=True)
                continue
            except OSError as e:
                raise RunLocked(f"cannot create the lock {path}: {e.strerror}") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me) + "\n")
            return cls(path, me)
        raise RunLocked(f"could not take the lock {path}: other runs keep replacing it")

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Remove the lock if it is still ours (idempotent)."""
        self._stop.set()
        holder = _read(self.path)
        if holder is not None and all(holder.get(k) == self.holder[k] for k in ("pid", "host", "start_ticks")):
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _unchanged_for(path: str, seconds: float) -> bool:
    """True when `path`'s mtime does not change for `seconds` (by this process's clock)."""
    first = _mtime_ns(path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(min(0.5, seconds / 4))
        if _mtime_ns(path) != first:
            return False
    return True


def _is_stale(path: str, holder: dict) -> bool:
    if holder["host"] == socket.gethostname() and isinstance(holder["pid"], int):
        ticks = process_start_ticks(holder["pid"])
        return ticks is None or (holder["start_ticks"] is not None and ticks != holder["start_ticks"])
    return _unchanged_for(path, STALE_AFTER_S)


def _take_over(path: str, stale: dict) -> bool:
    """Move the stale lock aside, atomically; if another process replaced it meanwhile (its lock is
    what we moved), put that one back. True when the stale lock was removed by us."""
    aside = f"{path}.stale.{uuid.uuid4().hex}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    moved = _read(aside)
    if moved is not None and any(moved.get(k) != stale.get(k) for k in ("pid", "host", "start_ticks")):
        try:
            os.link(aside, path)   # fails if a third run took the place: then it holds the lock
        except OSError:
            pass
        os.remove(aside)
        return False
    os.remove(aside)
    return True
