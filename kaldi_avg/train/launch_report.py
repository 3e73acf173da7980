"""What train_rnn.py / train_dnn.py show of a launch: the ranks' progress live, each failure once.

On a failure every rank says why (failure_guard's line and traceback, comm.abort's line, the exit
monitors), the MPI library adds its own (MPICH's `Abort(1) on node ...` and BAD TERMINATION banner,
Open MPI's boxes), and so does the launcher (hydra's `[mpiexec@host]` lines, run.pl's "failed, log
is in"): three to eight copies of one error. So the launcher's stdout and stderr go through
`LauncherOutput`: every byte into log/launcher.log, and to the console only the lines that are no
part of an error report. When the launch fails, `failure_lines` distills the one line from what
the failed ranks left in log/rank.R.failed (the first failure, not the ranks that the launcher
killed after it), else from the relayed lines (a rank that failed before its report existed), else
from the launcher's own words; then the resume line where an N.mdl exists. `--verbose 1` adds the
failure's traceback.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from ..atomic import writable_dir
from .expdir import ExpDir

REPORT_PREFIX = "kaldi_avg.parallel: "   # the lines of log/rank.R.failed that say why (see parallel/watchdog.py)
REPORT_WHERE = re.compile(r"^# pid (\d+) on (\S+) at (\S+)$")   # leave_report's first line
MONITOR_LINE = re.compile(r"ended without finishing at (\S+)$")   # an exit monitor's line (its time)
USAGE_LINE = re.compile(r"^rank \d+/\d+: error: (.*)$")           # failure_guard: the user's input
RANK_LINE = re.compile(r"^rank (\d+/\d+) (?!\()")                   # "rank r/n failed (...)", no pid yet
SCRIPT_ERROR = re.compile(r"^[\w.-]+\.py: error: (.*)$")            # a rank's cli.main before its guard

# Lines that are part of an error report, or the MPI library's or launcher's noise around one.
ECHOES = re.compile("|".join((
    r"^kaldi_avg\.parallel[:.]",                    # comm.abort, exit monitors, watchdogs
    r"^rank \d+/\d+: error: ", SCRIPT_ERROR.pattern,
    r"^Abort\(\d+\) on node ",                      # MPICH's MPI_Abort
    r"^=+$", r"^=   ",                              # MPICH's BAD TERMINATION banner ...
    r"^YOUR APPLICATION TERMINATED WITH", r"^This typically refers to a problem with your application",
    r"^Please see the FAQ page for debugging",
    r"^\[(mpiexec|proxy)[^\]]*@[^\]]*\] ",          # hydra's own
    r"^\[[\w.-]+:\d+\] \*\*\* ",                    # Open MPI's "[host:pid] *** An error occurred ..."
    r"^(run|queue|slurm|ssh)\.pl: ",                # Kaldi's $cmd on a failed job
    r"^(srun|slurmstepd)(: |-)",
    r"^\s*$",
)))
LAUNCHER_WORDS = re.compile(r"^(\[(mpiexec|proxy)[^\]]*\] |(run|queue|slurm|ssh)\.pl: |srun: |prterun |mpirun )")
OPEN_MPI_RULE = re.compile(r"^-{60,}$")               # Open MPI boxes its messages in such lines
# Where a line of one rank starts when the launcher wrote it right after another rank's unfinished
# line (hydra forwards what it read from each rank as it comes): a report, MPI_Abort, a progress line.
LINE_STARTS = re.compile(r"kaldi_avg\.parallel: |Abort\(\d+\) on node |\d\d:\d\d:\d\d \[rank \d+\] ")
TRACEBACK = "Traceback (most recent call last):"
CHAINED = ("During handling of the above exception, another exception occurred:",
           "The above exception was the direct cause of the following exception:")


class _LineFilter:
    """Which lines of one stream reach the console: not the echoes, tracebacks or boxes."""

    def __init__(self) -> None:
        self._traceback = False
        self._box = False

    def keep(self, line: str) -> bool:
        if OPEN_MPI_RULE.match(line):
            self._box = not self._box
            return False
        if self._box:
            return False
        if line == TRACEBACK or line in CHAINED:
            self._traceback = True
            return False
        if self._traceback:
            if line.startswith((" ", "\t")) or not line.strip():
                return False
            self._traceback = False   # the exception's own line ends it
            return False
        return not ECHOES.search(line)


def split_lines(line: str) -> list[str]:
    """`line` cut where another rank's line starts in it (LINE_STARTS after the first character)."""
    starts = [0, *(m.start() for m in LINE_STARTS.finditer(line) if m.start() > 0)]
    return [line[a:b] for a, b in zip(starts, [*starts[1:], len(line)])]


class LauncherOutput:
    """Relays the launcher's output (`start` once per stream): every byte into `log_path`, the
    lines that are no part of an error report to the console, live. The suppressed lines are kept
    (`held`) for the report when no rank left one."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self._log: IO[bytes] | None = open(log_path, "wb")   # closed by close()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._console = True
        self.held: list[str] = []

    def start(self, pipe: IO[bytes], console: IO[str]) -> None:
        thread = threading.Thread(target=self._relay, args=(pipe, console), name="kaldi-avg-launcher-output",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _relay(self, pipe: IO[bytes], console: IO[str]) -> None:
        keep = _LineFilter().keep
        for raw in iter(pipe.readline, b""):
            with self._lock:
                self._write_log(raw)
                for line in split_lines(raw.decode("utf-8", errors="replace").rstrip("\r\n")):
                    if keep(line):
                        if self._console:
                            console.write(line + "\n")
                            console.flush()
                    elif line.strip():
                        self.held.append(line)

    def _write_log(self, raw: bytes) -> None:
        if self._log is None:
            return
        try:
            self._log.write(raw)
            self._log.flush()
        except OSError:   # a full disk: the console still gets the lines, the report says the rest
            self._log = None

    def close(self, timeout_s: float = 3.0) -> None:
        """After the launcher has ended: the rest of its output (a helper that outlived it may hold
        the pipe: not waited for longer than `timeout_s`), then no more console lines."""
        for thread in self._threads:
            thread.join(timeout_s)
        with self._lock:
            self._console = False
            if self._log is not None:
                try:
                    self._log.close()
                except OSError:
                    pass
                self._log = None


@dataclass(frozen=True)
class Verdict:
    """One failed rank's word on why (a line of log/rank.R.failed after REPORT_PREFIX)."""
    rank: int
    text: str
    when: str = ""          # ISO time: the report's, or an exit monitor's
    where: str = ""         # "pid P on HOST" of the rank that wrote it
    trace: str = ""         # its traceback, if it wrote one
    details: str = ""       # where to read more: its log/rank.R.failed, else log/launcher.log

    @property
    def monitor(self) -> bool:
        return MONITOR_LINE.search(self.text) is not None


def read_verdicts(exp_dir: str, num_ranks: int, since: float) -> list[Verdict]:
    """What the failed ranks of this launch (files newer than `since`) wrote in log/rank.R.failed."""
    verdicts = []
    for rank in range(num_ranks):
        path = ExpDir(exp_dir).rank_failed(rank)
        try:
            if os.path.getmtime(path) < since:
                continue
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        where = next((m for m in map(REPORT_WHERE.match, lines) if m), None)
        trace = "".join(line + "\n" for line in lines
                        if not line.startswith(REPORT_PREFIX) and not REPORT_WHERE.match(line))
        for line in lines:
            if line.startswith(REPORT_PREFIX):
                text = line.removeprefix(REPORT_PREFIX)
                monitor = MONITOR_LINE.search(text)
                verdicts.append(Verdict(rank, text, monitor.group(1) if monitor else where.group(3) if where else "",
                                        f"pid {where.group(1)} on {where.group(2)}" if where else "",
                                        "" if monitor else trace, path))
    return verdicts


def printed_verdicts(held: list[str], log: str) -> list[Verdict]:
    """The verdicts the ranks printed (comm.abort's lines, the exit monitors'), when none could be
    written to log/rank.R.failed (a full disk) or the launcher forwarded what its ranks wrote there."""
    verdicts = []
    for line in held:
        if line.startswith(REPORT_PREFIX):
            text = line.removeprefix(REPORT_PREFIX)
            rank = re.match(r"rank (\d+)", text)
            monitor = MONITOR_LINE.search(text)
            verdicts.append(Verdict(int(rank.group(1)) if rank else -1, text, monitor.group(1) if monitor else "",
                                    details=log))
    return verdicts


def one_line(verdict: Verdict, exp_dir: str) -> str:
    """The user's error as the single-rank run prints it; a crash names the rank, pid and host."""
    usage = USAGE_LINE.match(verdict.text)
    if usage:
        return usage.group(1)
    if verdict.monitor:
        return f"{verdict.text} (killed by a signal, the OOM killer or a crash; the logs: {ExpDir(exp_dir).log_dir})"
    text = RANK_LINE.sub(lambda m: f"rank {m.group(1)} ({verdict.where}) ", verdict.text, count=1) \
        if verdict.where else verdict.text
    return f"{text} (details: {verdict.details or ExpDir(exp_dir).launcher_log})"


def rank_log_error(exp_dir: str, num_ranks: int, since: float) -> str | None:
    """The first `<script>: error:` line in log/rank.JOB.log (--mpi.launcher=cmd) of this launch:
    a rank that failed before its failure report existed (its communicator, say)."""
    for job in range(1, num_ranks + 1):
        path = ExpDir(exp_dir).rank_logs().replace("JOB", str(job))
        try:
            if os.path.getmtime(path) < since:
                continue
            with open(path, errors="replace") as f:
                for line in f:
                    m = SCRIPT_ERROR.match(line.rstrip("\n"))
                    if m:
                        return m.group(1)
        except OSError:
            continue
    return None


def failure_lines(script: str, exp_dir: str, num_ranks: int, since: float, code: int,
                  first_failure: Callable[[list[str]], str], output: LauncherOutput | None = None,
                  verbose: bool = False) -> list[str]:
    """The report of a failed launch: `<script>: error: <the first failure>` (after its traceback
    with `verbose`), then the resume line where an N.mdl exists. `first_failure` picks among the
    verdicts' texts, given in the order of their times (launch.first_failure)."""
    lines = []
    held = output.held if output is not None else []
    log = output.log_path if output is not None else ExpDir(exp_dir).launcher_log
    verdicts = read_verdicts(exp_dir, num_ranks, since) or printed_verdicts(held, log)
    verdicts.sort(key=lambda v: (v.when or "~", v.rank))
    if verdicts:
        chosen = first_failure([v.text for v in verdicts])
        first = next(v for v in verdicts if v.text == chosen)
        if verbose and first.trace:
            lines += first.trace.rstrip("\n").splitlines()
        message = one_line(first, exp_dir)
    else:
        said = [m.group(1) for m in map(SCRIPT_ERROR.match, held) if m] + \
            [m.group(1) for m in map(USAGE_LINE.match, held) if m]
        said = said or list(filter(None, [rank_log_error(exp_dir, num_ranks, since)]))
        own = [line for line in held if LAUNCHER_WORDS.match(line)]
        if said:
            message = said[0]
        elif own:
            message = f"the launcher failed (exit {code}): {own[0]} (its output: {log})"
        else:
            message = f"the launcher exited with status {code} (its output: {log})"
    lines.append(f"{script}: error: {message}")
    resume = resume_line(script, exp_dir)
    return lines + ([resume] if resume else [])


def resume_line(script: str, exp_dir: str) -> str | None:
    done = ExpDir(exp_dir).numbered_models()
    if not done:
        return None
    return f"{script}: {done[-1]}.mdl is the last finished iteration; resume with --stage {done[-1]}"


def with_resume_line(script: str, exp_dir: str, code: int) -> int:
    """`code`, after the resume line when it is not 0 and an N.mdl exists (a one-rank run)."""
    resume = resume_line(script, exp_dir) if code else None
    if resume:
        print(resume, file=sys.stderr)
    return code


def check_log_dir(exp_dir: str) -> None:
    """An OutputError naming log/ when the launcher could not write log/launcher.log there."""
    writable_dir(ExpDir(exp_dir).log_dir)


def print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()
