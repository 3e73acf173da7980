"""Per-job log files in the layout of Kaldi's run.pl (`exp/<dir>/log/<stage>.<job>.log`)."""
from __future__ import annotations

import os
import time

from ..atomic import write_text


class JobLog:
    """Collects the lines of one job and writes them, framed like run.pl, when closed.

    Use as a context manager; an exception is recorded in the log (code 1) and re-raised.
    """

    def __init__(self, path: str, command: str):
        self.path = path
        self.lines = [f"# {command}", f"# Started at {time.ctime()}", "#"]
        self.start = time.time()

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def __enter__(self) -> "JobLog":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        code = 0 if exc is None else 1
        if exc is not None:
            self.lines.append(f"ERROR: {exc}")
        self.lines.append(f"# Accounting: time={int(time.time() - self.start)} threads=1")
        self.lines.append(f"# Ended (code {code}) at {time.ctime()}, elapsed time "
                          f"{int(time.time() - self.start)} seconds")
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        write_text(self.path, "\n".join(self.lines) + "\n")
