"""A progress bar for the quiet stretches after the last iteration (combination, priors).

It draws (tqdm, on `stream`, by default stderr) only where that stream is a terminal; elsewhere
(a log file, the pipe from a rank to its launcher) it draws nothing, so logs stay clean. Use it as
a context manager, or call `close()`: the drawn line then ends with a newline.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm


class _Bar(tqdm):
    monitor_interval = 0   # no monitor thread left running in a training process


FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]"


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):   # no isatty, or a closed stream
        return False


def _columns(stream) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):   # no file descriptor (a test's stream), not a terminal
        return 0


class Progress:
    """`total` steps of `unit`, drawn as `combining:  40%|####      | 12/30 evaluations [00:08<00:12]`."""

    def __init__(self, total: int, desc: str, unit: str = "it", stream: TextIO | None = None):
        stream = sys.stderr if stream is None else stream
        self.total = total
        self.n = 0
        self._bar = None
        if is_terminal(stream):
            # follow the terminal's size; one that reports none (0 x 0: a fresh pty) is taken as 80 x 24
            sized = _columns(stream) >= 20
            self._bar = _Bar(total=total, desc=desc, unit=unit, file=stream, leave=True, miniters=1, bar_format=FORMAT,
                             dynamic_ncols=sized, ncols=None if sized else 79, nrows=None if sized else 24)

    @property
    def drawing(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(desc: str, unit: str = "it", stream: TextIO | None = None) -> Callable[[int], Progress]:
    """A factory for functions that know their total only once they start: `factory(total)`."""
    return lambda total: Progress(total, desc, unit, stream)
