"""A rank never outlives its launcher, and a finished rank's exit is not undone by its helper's death:
`LauncherWatch` ends a process whose launcher's heartbeat file stops changing (one line naming the
launcher), `die_with_parent` ends it with its parent, and `ExitMonitor.close` tolerates a killed helper."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def python(code: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


WATCHED = """
    import sys, time
    from kaldi_avg.parallel.watchdog import LauncherWatch
    LauncherWatch(sys.argv[1], timeout_s=1.5, interval_s=0.1, who="rank 1/2 (pid 7)").start()
    print("watching", flush=True)
    time.sleep(60)
"""


def test_a_rank_exits_when_its_launchers_heartbeat_stops_and_not_before(tmp_path):
    heartbeat = tmp_path / "launcher.heartbeat"
    heartbeat.write_text("train_rnn.py, pid 12 on node3\n")
    beating = threading.Event()
    beating.set()

    def beat():
        while beating.is_set():
            os.utime(heartbeat)
            time.sleep(0.2)

    threading.Thread(target=beat, daemon=True).start()
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WATCHED), str(heartbeat)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == "watching\n"
        time.sleep(3)   # twice the timeout, with the launcher alive
        assert proc.poll() is None
        beating.clear()   # the launcher is gone
        code = proc.wait(timeout=15)
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(
        "kaldi_avg.parallel: rank 1/2 (pid 7): its launcher (train_rnn.py, pid 12 on node3) is gone: "
        f"{heartbeat} has not changed for "), err


def test_a_rank_dies_with_its_parent():
    parent = python(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {'''
import time
from kaldi_avg.parallel.watchdog import die_with_parent
assert die_with_parent()
print("set", flush=True)
time.sleep(60)
'''!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "set\\n"
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    child = int(parent.stdout.readline())
    try:
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_killed_exit_monitor_does_not_fail_a_finished_rank():
    proc = python("""
        import os, signal, time
        from kaldi_avg.parallel import ExitMonitor, LocalCommunicator
        monitor = ExitMonitor(LocalCommunicator())
        time.sleep(0.3)
        os.kill(monitor._process.pid, signal.SIGKILL)   # e.g. a user's kill of the helper
        monitor._process.wait()
        monitor.close()
        print("finished", flush=True)
    """)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out == "finished\n", err
    assert "Error" not in err, err
