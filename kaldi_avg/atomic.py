"""Atomic file output: every file is written under a temporary name in its own directory and
renamed into place, so an interrupted stage never leaves a half-written file behind."""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()  # mkstemp creates 0600 files; finished files get the usual umask mode


@contextmanager
def atomic_path(path: str, mode: int = FILE_MODE) -> Iterator[str]:
    """Yields a temporary path next to `path`; renames it to `path` if the block succeeds, with
    `mode` set before the rename (an executable script is never seen without its x bits)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", suffix="." + os.path.basename(path), dir=d)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
