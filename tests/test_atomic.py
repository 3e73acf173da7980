"""Atomic output (kaldi_avg/atomic.py): a failed write leaves nothing; what a killed writer left is
removed before the next run."""
import os

import pytest

from kaldi_avg.atomic import atomic_path, remove_stale_temporaries, write_text


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
