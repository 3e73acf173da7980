"""Atomic output (kaldi_avg/atomic.py): a failed write leaves nothing; what a killed writer left is
removed before the next run; a full disk or a read-only file system is one line naming the file."""
import errno
import os

import pytest

from kaldi_avg.atomic import atomic_path, copy_file, remove_stale_temporaries, writable_dir, write_text
from kaldi_avg.errors import OutputError, UsageError


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    write_text(str(path), "old\n")
    with pytest.raises(RuntimeError), atomic_path(str(path)) as tmp, open(tmp, "w") as f:
        f.write("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["a.txt"]


def test_stale_temporaries_go_down_one_level(tmp_path):
    (tmp_path / "log" / "deep").mkdir(parents=True)
    for name in (".tmp.x.final.mdl", "log/.tmp.y.train.1.log", "log/deep/.tmp.z", "log/train.1.log"):
        (tmp_path / name).write_text("")
    remove_stale_temporaries(str(tmp_path))
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["log/deep/.tmp.z", "log/train.1.log"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_a_full_disk_or_read_only_file_system_is_one_line_naming_the_file(tmp_path, code):
    path = tmp_path / "log" / "train.3.1.log"
    with pytest.raises(OutputError) as raised, atomic_path(str(path)) as tmp, open(tmp, "w") as f:
        f.write("half")
        raise OSError(code, os.strerror(code))   # write(2) names no file
    assert str(raised.value).startswith(f"{path}: cannot write: {os.strerror(code)}")
    assert isinstance(raised.value, UsageError) and isinstance(raised.value, OSError) and raised.value.errno == code
    assert os.listdir(tmp_path / "log") == []


def test_another_files_error_inside_the_block_is_left_alone(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(str(tmp_path / "copy")) as tmp:
        copy_file(str(tmp_path / "no-such-source"), tmp)
    with pytest.raises(OSError) as raised, atomic_path(str(tmp_path / "a")):
        raise OSError(errno.EIO, "Input/output error")
    assert not isinstance(raised.value, OutputError)


def test_a_read_only_directory_is_found_before_any_work(tmp_path):
    (tmp_path / "log").write_text("")   # not a directory
    with pytest.raises(OutputError, match="log: cannot write: File exists"):
        writable_dir(str(tmp_path / "log"))
    writable_dir(str(tmp_path / "fresh" / "log"))
    assert os.listdir(tmp_path / "fresh" / "log") == []
