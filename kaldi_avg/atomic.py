"""Atomic file output: every file is written under a temporary name in its own directory and
renamed into place, so an interrupted stage never leaves a half-written file behind. A full disk or
quota, a read-only file system or a permission problem is an `OutputError` naming the file (one line
at every entry point: "No space left on device" alone names none)."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import OutputError, output_error


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()  # mkstemp creates 0600 files; finished files get the usual umask mode


@contextmanager
def atomic_path(path: str, mode: int = FILE_MODE) -> Iterator[str]:
    """Yields a temporary path next to `path`; renames it to `path` if the block succeeds, with
    `mode` set before the rename (an executable script is never seen without its x bits). An
    OSError about the output (`_about_output`) with an errno of errors.OUTPUT_ERRNOS (a full disk,
    a read-only file system) becomes an OutputError naming `path`."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix="." + os.path.basename(path), dir=d)
        os.close(fd)
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        error = output_error(path, e) if _about_output(e.filename, path, d) else e
        if error is e:
            raise
        raise error from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _about_output(name, path: str, d: str) -> bool:
    """Whether an OSError's file is the output: none named (a write), `path`, its temporary, or `d`
    and the directories above it (makedirs); not the source of a copy, say."""
    if name is None:
        return True
    name = os.path.abspath(os.fsdecode(name))
    return name == os.path.abspath(path) or os.path.basename(name).startswith(".tmp.") or \
        (d + os.sep).startswith(name.rstrip(os.sep) + os.sep)


def make_dirs(path: str) -> None:
    """os.makedirs(path, exist_ok=True); a full disk or a read-only file system is an OutputError."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        error = output_error(path, e)
        if error is e:
            raise
        raise error from e


def writable_dir(path: str) -> None:
    """Creates directory `path` if needed and a file in it (gone at once): OutputError naming it when
    it cannot (a read-only file system, no permission), before any work whose output would be lost."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as e:
        raise OutputError(path, e) from e


def remove_stale_temporaries(root: str) -> None:
    """Removes the temporary files that writers killed mid-write (SIGKILL) left in `root` and in
    the directories directly below it; only when no writer is running there."""
    for path in glob.glob(os.path.join(root, ".tmp.*")) + glob.glob(os.path.join(root, "*", ".tmp.*")):
        os.remove(path)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_lines(path: str, lines) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def copy_file(src: str, dst: str) -> None:
    """cp src dst (following symlinks), atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def copy_tree(src: str, dst: str, skip=()) -> None:
    """cp -r src/. dst/, file by file atomically; top-level entries named in `skip` are left out."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        if rel == ".":
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip]
        os.makedirs(os.path.join(dst, rel), exist_ok=True)
        for name in files:
            copy_file(os.path.join(root, name), os.path.join(dst, rel, name))
