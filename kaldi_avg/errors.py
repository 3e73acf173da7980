"""The errors every entry point reports as one line without a traceback."""
from __future__ import annotations

import errno
import importlib
from types import ModuleType


class UsageError(ValueError):
    """A problem with the user's options or data, not with kaldi-avg: the message names the option,
    file or utterance. Entry points print it as one line (the traceback only with --verbose)."""


# What the user can mend where an output goes: space, quota, a read-only file system, permissions.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_OUTPUT_HINTS = {errno.ENOSPC: "free space on its file system", errno.EDQUOT: "raise the quota or free space",
                 errno.EROFS: "choose a writable --dir", errno.EACCES: "check the directory's permissions",
                 errno.EPERM: "check the directory's permissions"}


class OutputError(UsageError, OSError):
    """A file that cannot be written for a reason in OUTPUT_ERRNOS ("No space left on device" names
    no file by itself): one line naming the file. Still an OSError, so that code which falls back
    when a file cannot be written (an unwritable data directory's utt2num_frames) keeps doing so."""

    def __init__(self, path: str, error: OSError) -> None:
        hint = _OUTPUT_HINTS.get(error.errno)
        super().__init__(f"{path}: cannot write: {error.strerror}" + (f" ({hint})" if hint else ""))
        self.errno, self.strerror, self.filename = error.errno, error.strerror, path

    def __str__(self) -> str:   # OSError's "[Errno 28] ..." would hide the message
        return str(self.args[0])


def output_error(path: str, error: OSError) -> OSError:
    """`error` as an OutputError naming `path` when it is one (see OUTPUT_ERRNOS), else unchanged."""
    if isinstance(error, OutputError) or error.errno not in OUTPUT_ERRNOS:
        return error
    return OutputError(path, error)


class MissingExtraError(UsageError):
    """An optional dependency is not installed: the message names the pip extra that brings it."""


def import_extra(module: str, extra: str, needed_by: str) -> ModuleType:
    """`import module`, or MissingExtraError: "<needed_by> needs <package> (No module named ...):
    pip install 'kaldi-avg[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(missing_extra(module, extra, needed_by, str(e))) from None


def missing_extra(module: str, extra: str, needed_by: str, why: str = "") -> str:
    """The message of a MissingExtraError."""
    return f"{needed_by} needs {module.split('.')[0]}{f' ({why})' if why else ''}: pip install 'kaldi-avg[{extra}]'"
