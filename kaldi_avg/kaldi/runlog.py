"""Log files in the layout of Kaldi's run.pl (`exp/<dir>/log/<stage>.<job>.log`): the command,
the start time, the program's lines, and the `# Accounting:` / `# Ended (code N)` trailer that
Kaldi's reporting scripts parse (docs/kaldi-formats.md 6.9). Written atomically."""
from __future__ import annotations

import os
import time

from ..atomic import make_dirs, write_text


def _date(t: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Z %Y", time.localtime(t))


def write_run_log(path: str, command: str, lines: list[str], seconds: float, code: int = 0) -> None:
    """One job's log, written when it has finished `seconds` after it started."""
    end = time.time()
    elapsed = int(round(seconds))
    text = [f"# {command}", f"# Started at {_date(end - seconds)}", "#", *lines,
            f"# Accounting: time={elapsed} threads=1",
            f"# Ended (code {code}) at {_date(end)}, elapsed time {elapsed} seconds"]
    make_dirs(os.path.dirname(os.path.abspath(path)))
    write_text(path, "\n".join(text) + "\n")


class JobLog:
    """Collects the lines of one job and writes them when closed; use as a context manager. An
    exception is recorded in the log (code 1) and re-raised."""

    def __init__(self, path: str, command: str):
        self.path, self.command = path, command
        self.lines: list[str] = []
        self.start = time.time()

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def __enter__(self) -> JobLog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.lines.append(f"ERROR: {exc}")
        write_run_log(self.path, self.command, self.lines, time.time() - self.start, 0 if exc is None else 1)
