"""One run per experiment directory (kaldi_avg/train/runlock.py): a live holder is refused in one
line naming its pid and host; a dead one's lock (same host: its pid is gone or another process's;
another host: the lock stops changing) is replaced, saying so; the lock goes away with its holder."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pytest

from kaldi_avg.train import runlock
from kaldi_avg.train.runlock import RunLock, RunLocked, process_start_ticks


def write_lock(path, **holder):
    with open(path, "w") as f:
        f.write(json.dumps({"start_ticks": None, "program": "train_rnn.py", "started": "then", **holder}) + "\n")


def test_a_second_run_is_refused_naming_the_first(tmp_path):
    path = str(tmp_path / "kaldi_avg.lock")
    with RunLock.acquire(path, "train_rnn.py") as first:
        assert json.loads(open(path).read())["pid"] == os.getpid()
        with pytest.raises(RunLocked) as refused:
            RunLock.acquire(path, "train_dnn.py")
        message = str(refused.value)
        assert "\n" not in message and f"is in use by another run: pid {os.getpid()} on {socket.gethostname()} " \
            f"(train_rnn.py, started {first.holder['started']})" in message
    assert not os.path.exists(path)


def test_the_holder_keeps_its_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "REFRESH_S", 0.1)
    path = str(tmp_path / "kaldi_avg.lock")
    with RunLock.acquire(path, "train_rnn.py"):
        before = os.stat(path).st_mtime_ns
        time.sleep(0.5)
        assert os.stat(path).st_mtime_ns != before


def test_a_dead_holders_lock_on_this_host_is_replaced(tmp_path, capsys):
    path = str(tmp_path / "kaldi_avg.lock")
    gone = subprocess.Popen(["true"])
    gone.wait()
    write_lock(path, pid=gone.pid, host=socket.gethostname())
    with RunLock.acquire(path, "train_rnn.py"):
        assert json.loads(open(path).read())["pid"] == os.getpid()
    assert f"train_rnn.py: replaced the stale lock {path} of pid {gone.pid} on" in capsys.readouterr().err
    # a reused pid: alive, but started at another time than the holder
    write_lock(path, pid=os.getpid(), host=socket.gethostname(), start_ticks=process_start_ticks(os.getpid()) - 1)
    RunLock.acquire(path, "train_rnn.py").release()
    assert "replaced the stale lock" in capsys.readouterr().err


def test_another_hosts_lock_is_stale_when_it_stops_changing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runlock, "STALE_AFTER_S", 1.0)
    path = str(tmp_path / "kaldi_avg.lock")
    write_lock(path, pid=4242, host="node-elsewhere")
    refreshing = threading.Event()
    refreshing.set()

    def refresh():   # the holder on the other host, alive
        while refreshing.is_set():
            os.utime(path)
            time.sleep(0.2)

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    with pytest.raises(RunLocked, match="pid 4242 on node-elsewhere"):
        RunLock.acquire(path, "train_rnn.py")
    refreshing.clear()
    thread.join()
    RunLock.acquire(path, "train_rnn.py").release()   # unchanged for STALE_AFTER_S by this clock: gone
    assert "of pid 4242 on node-elsewhere" in capsys.readouterr().err
    assert not os.path.exists(path)


def test_a_lock_that_cannot_be_written_is_one_line(tmp_path):
    with pytest.raises(RunLocked, match=r"cannot create the lock .*/no-such-dir/kaldi_avg.lock: No such file"):
        RunLock.acquire(str(tmp_path / "no-such-dir" / "kaldi_avg.lock"), "train_rnn.py")
