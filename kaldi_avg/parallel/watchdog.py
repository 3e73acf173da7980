"""Turning a dead or stuck rank into a prompt, non-zero exit of every rank, with a message naming it.

Each mechanism covers a different way of failing:

* `failure_guard(comm, report_path)`: an exception anywhere in this rank (main thread or any other
  thread) prints "rank r/n failed: ..." and aborts the whole job, instead of leaving the other ranks
  blocked in a collective (with MPICH, a rank that merely exits after an exception hangs in
  MPI_Finalize). The launcher may kill a rank before it forwards the rank's stderr, so the message and
  traceback also go to `report_path`, a file the process that started the launcher can print (the
  Watchdog below writes its verdict there too).
* `ExitMonitor(comm)`: a tiny helper process per rank that notices when the rank's process is gone
  without having said goodbye (killed by a signal or the OOM killer, crashed in C, `os._exit`) and
  prints "rank r/n (pid p on host) ended without finishing at <time>" (and leaves it in `report_path`).
  The launcher (hydra) then kills the other ranks, whose monitors report too; the earliest time names
  the rank that died first.
* `Watchdog(comm)`: ring heartbeats. Rank r beats to r+1 and watches r−1 from a background thread;
  when r−1 is silent for `timeout_s` (hung in finalize, stopped, or dead under a launcher that does
  not clean up), rank r aborts the job naming r−1. With `op_timeout_s`, a communication call of this
  rank that waits longer than that (a collective some rank never joined) aborts too, naming the
  operation. The heartbeat carries how many operations the sender completed, so the message says how
  far the silent rank got.
* `LauncherWatch(heartbeat_path)`: a rank started by steps/kaldi_avg/train_rnn.py (train_dnn.py) never
  outlives it. The launcher touches a heartbeat file every second; when its mtime has not changed for
  `timeout_s` (successive mtimes compared by this rank's own clock, never across hosts) the launcher
  is gone (SIGKILL, its node lost), and the rank exits with one line naming it. `die_with_parent()`
  adds PR_SET_PDEATHSIG where the launcher is the rank's parent (torchrun's agent, run.pl's job shell).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from ..errors import UsageError
from .comm import CommAborted, Communicator, HeartbeatChannel

_ALIVE, _GOODBYE = 1.0, -1.0


_MONITOR = """
import datetime, sys
if sys.stdin.read() != "bye":
    stamp = datetime.datetime.now().isoformat(timespec="microseconds")
    line = sys.argv[1] + " ended without finishing at " + stamp
    if len(sys.argv) > 2:
        with open(sys.argv[2], "a") as report:
            report.write(line + "\\n")
    print(line, file=sys.stderr, flush=True)
"""


class ExitMonitor:
    """Reports this rank's death from a helper process (see the module docstring).

    Normal interpreter exit says goodbye by itself (atexit); `close()` does it earlier. With
    `report_path`, the line is appended there too (the launcher may not forward what was printed)."""

    def __init__(self, comm: Communicator, report_path: str | None = None) -> None:
        self.who = f"kaldi_avg.parallel: rank {comm.rank}/{comm.size} (pid {os.getpid()} on {socket.gethostname()})"
        # Its own session: the launcher's clean-up of our process group must not silence it.
        self._process = subprocess.Popen([sys.executable, "-c", _MONITOR, self.who, *filter(None, [report_path])],
                                         stdin=subprocess.PIPE, text=True, start_new_session=True)
        atexit.register(self.close)

    def close(self) -> None:
        if self._process.stdin is None or self._process.stdin.closed:
            return
        try:
            self._process.stdin.write("bye")
            self._process.stdin.close()
        except OSError:   # the helper is gone (killed): nothing to tell it, and this rank did finish
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        self._process.wait()
        atexit.unregister(self.close)


def leave_report(report_path: str | None, trace: str, message: str) -> None:
    """Write why this rank aborts to `report_path`, before printing it: another rank's abort may
    kill this one at any moment, and the launcher may not forward what was printed. The first line
    says where and when (train/launch_report.py reads it); a report that cannot be written (a full
    disk) is left out: the abort must still happen."""
    if report_path is not None:
        now = time.time()   # as the exit monitors stamp their lines (datetime's isoformat)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1e6):06d}"
        with contextlib.suppress(OSError), open(report_path, "w") as report:
            report.write(f"# pid {os.getpid()} on {socket.gethostname()} at {stamp}\n{trace}"
                         f"kaldi_avg.parallel: {message}\n")


@contextlib.contextmanager
def failure_guard(comm: Communicator, report_path: str | None = None, verbose: bool = False) -> Iterator[None]:
    """Abort every rank when this rank fails, in this block or in any thread it started. A
    `UsageError` (bad options or data) is reported as its one-line message, "rank r/n: error: ..."
    (with `verbose`, after its traceback, like any other failure). The line is comm.abort's, printed
    once; train_rnn.py shows the first failure's alone (train/launch_report.py)."""

    def report_and_abort(kind: str, error: BaseException | None, tb) -> None:
        if isinstance(error, CommAborted):
            raise error
        usage = isinstance(error, UsageError)
        message = f"rank {comm.rank}/{comm.size}: error: {error}" if usage else \
            f"rank {comm.rank}/{comm.size} failed ({kind}): {type(error).__name__}: {error}"
        trace = "" if usage and not verbose else "".join(traceback.format_exception(type(error), error, tb))
        leave_report(report_path, trace, message)
        if trace:
            print(trace, end="", file=sys.stderr, flush=True)
        comm.abort(message)

    previous_hook = threading.excepthook
    threading.excepthook = lambda args: report_and_abort(
        f"thread {args.thread.name if args.thread else '?'}", args.exc_value, args.exc_traceback)
    try:
        yield
    except SystemExit as stop:
        if stop.code not in (None, 0):
            report_and_abort("exit", stop, stop.__traceback__)
        raise
    except BaseException as error:
        report_and_abort("main", error, error.__traceback__)
        raise
    finally:
        threading.excepthook = previous_hook


class Watchdog:
    """Ring heartbeats from a daemon thread; see the module docstring. Start and stop collectively."""

    def __init__(self, comm: Communicator, interval_s: float = 0.5, timeout_s: float = 10.0,
                 op_timeout_s: float | None = None, report_path: str | None = None) -> None:
        if timeout_s <= interval_s:
            raise ValueError("the silence timeout must exceed the heartbeat interval")
        self.comm = comm
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.op_timeout_s = op_timeout_s
        self.report_path = report_path
        self.successor = (comm.rank + 1) % comm.size
        self.predecessor = (comm.rank - 1) % comm.size
        self._channel: HeartbeatChannel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None

    def start(self) -> Watchdog:
        if self.comm.size == 1:
            return self
        self._channel = self.comm.heartbeats()
        self.comm.barrier()  # everyone starts watching from the same moment
        self._thread = threading.Thread(target=self._run, name="kaldi-avg-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Say goodbye to the successor (so it stops watching us) and end the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        assert self._channel is not None
        last_seen = time.monotonic()
        last_progress: float | None = None
        watching = True
        while not self._stop.wait(self.interval_s):
            self._channel.post(self.successor, (_ALIVE, float(self.comm.ops_completed)))
            for state, progress in self._channel.drain(self.predecessor):
                last_seen, last_progress = time.monotonic(), progress
                watching = watching and state != _GOODBYE
            silent = time.monotonic() - last_seen
            if watching and silent > self.timeout_s:
                heard = "none since the watchdog started" if last_progress is None else \
                    f"the last said it had completed {last_progress:.0f} communication operations"
                self._fail(f"rank {self.predecessor} sent no heartbeat for {silent:.1f} s ({heard}): it died or "
                           f"hung; rank {self.comm.rank} is aborting the job")
                return
            oldest = self.comm.oldest_in_flight()
            if self.op_timeout_s is not None and oldest is not None and oldest[1] > self.op_timeout_s:
                self._fail(f"rank {self.comm.rank}: {oldest[0]} has waited {oldest[1]:.1f} s (op timeout "
                           f"{self.op_timeout_s:g} s); rank {self.predecessor} had completed "
                           f"{last_progress or 0:.0f} operations, this rank {self.comm.ops_completed}")
                return
        self._channel.post(self.successor, (_GOODBYE, float(self.comm.ops_completed)))

    def _fail(self, message: str) -> None:
        self.failure = message
        leave_report(self.report_path, "", message)
        try:
            self.comm.abort(message)
        except CommAborted:
            return


LAUNCHER_HEARTBEAT_S = 1.0   # how often the launcher touches its heartbeat file
LAUNCHER_TIMEOUT_S = 10.0    # a rank exits when the file has not changed this long


def heartbeat_mtime(path: str) -> int | None:
    """The heartbeat file's mtime (ns), None when it cannot be read; open then fstat, so that NFS
    revalidates the attributes instead of answering from its cache."""
    try:
        with open(path, "rb") as f:
            return os.fstat(f.fileno()).st_mtime_ns
    except OSError:
        return None


class LauncherWatch:
    """Ends this rank when its launcher's heartbeat file stops changing (see the module docstring).

    `before_exit` callables run before the exit (the exit monitor says goodbye: the launcher's death
    is the whole story, in one line)."""

    def __init__(self, heartbeat_path: str, timeout_s: float = LAUNCHER_TIMEOUT_S, interval_s: float = 0.5,
                 who: str | None = None) -> None:
        self.path = heartbeat_path
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.who = who or f"pid {os.getpid()} on {socket.gethostname()}"
        self.before_exit: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def launcher(self) -> str:
        """What the launcher wrote into the file about itself (e.g. "train_rnn.py, pid 12 on node3")."""
        try:
            with open(self.path) as f:
                return f.read().strip() or "?"
        except OSError:
            return "?"

    def start(self) -> LauncherWatch:
        self._thread = threading.Thread(target=self._run, name="kaldi-avg-launcher-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        launcher = self.launcher()
        last, last_change = heartbeat_mtime(self.path), time.monotonic()
        while not self._stop.wait(self.interval_s):
            mtime = heartbeat_mtime(self.path)
            if mtime != last:
                last, last_change = mtime, time.monotonic()
                continue
            silent = time.monotonic() - last_change
            if silent > self.timeout_s:
                self._exit(f"{self.who}: its launcher ({launcher}) is gone: {self.path} has not changed for "
                           f"{silent:.1f} s; exiting")

    def _exit(self, message: str) -> None:
        print(f"kaldi_avg.parallel: {message}", file=sys.stderr, flush=True)
        for callback in self.before_exit:
            with contextlib.suppress(Exception):
                callback()
        os._exit(1)


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux PR_SET_PDEATHSIG).
    True when set; the caller decides that the parent is the launcher (a direct child)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(sig), 0, 0, 0) != 0:   # 1: PR_SET_PDEATHSIG
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:   # it died before the request: nobody will send the signal
        os.kill(os.getpid(), sig)
    return True
