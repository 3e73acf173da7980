"""Bad input, one fault at a time: a one-line error naming the file and the utterance (exit 1, no
traceback, nothing half-written), or a skip counted exactly once in log/skipped.log; a read-only or
full --dir is one line naming the file; with two ranks each error is still one line; a rank killed
or stopped mid-run ends the run naming it in one line, leaves nothing half-written and no process,
and the run resumes from the stage it names."""
import contextlib
import errno
import gc
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.datadir import feat_to_len, write_kaldi_map
from kaldi_avg.kaldi.tables import MatrixTable, read_int_vector_table, write_int_vector_table, write_matrix_table
from kaldi_avg.train import launch
from kaldi_avg.train.cli import main

from .experiment import make_experiment, train_args
from .processes import processes_mentioning, rank_process

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_RNN = os.path.join(ROOT, "steps", "kaldi_avg", "train_rnn.py")
UTT = "spk0-utt02"


def rewrite_feats(exp, change):
    scp = os.path.join(exp["data"], "feats.scp")
    feats = {k: np.array(v) for k, v in MatrixTable(scp).items()}
    change(feats)
    write_matrix_table(f"ark,scp:{exp['data']}/feats.ark,{scp}", sorted(feats.items()))


def rewrite_alignments(exp, change):
    path = os.path.join(exp["ali"], "ali.1.gz")
    alis = dict(read_int_vector_table(f"ark:gunzip -c {path}|"))
    change(alis)
    write_int_vector_table(f"ark:| gzip -c > {path}", sorted(alis.items()))


def wider(feats):
    feats[UTT] = np.concatenate([feats[UTT], feats[UTT][:, :1]], axis=1)


def nan_frames(feats):
    feats[UTT][3:5] = np.nan


def truncate_ark(exp):
    ark = os.path.join(exp["data"], "feats.ark")
    with open(ark, "r+b") as f:
        f.truncate(os.path.getsize(ark) - 10)


def write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)


def other_tree():
    import kaldi_hmm_gmm as khg
    return khg.monophone_context_dependency([1, 2, 3, 4], [0, 2, 2, 2, 2])   # 4 phones: 8 pdfs, not 6


def cmvn_stats(exp, speakers=("spk0", "spk1"), utt2spk_without=None):
    """cmvn.scp with stats for `speakers`; utt2spk without the line of `utt2spk_without`."""
    stats = np.zeros((2, 14))
    stats[0, 13] = 100.0
    write_matrix_table(f"ark,scp:{exp['data']}/cmvn.ark,{exp['data']}/cmvn.scp", [(s, stats) for s in speakers])
    path = os.path.join(exp["data"], "utt2spk")
    with open(path) as f:
        lines = [line for line in f if line.split()[0] != utt2spk_without]
    write(path, "".join(lines).encode())


def utt2num_frames(exp, change):
    frames = feat_to_len(os.path.join(exp["data"], "feats.scp"))
    change(frames)
    write_kaldi_map(os.path.join(exp["data"], "utt2num_frames"), frames)


def rewrite_xconfig(exp, old, new):
    path = os.path.join(exp["exp"], "configs", "network.xconfig")
    with open(path) as f:
        text = f.read()
    write(path, text.replace(old, new).encode())


ERRORS = {   # damage, extra options, what the one-line message must say
    "wrong feature dim": (lambda e: rewrite_feats(e, wider), {},
                          f"feats.scp: utterance {UTT} has dim 14, the network's input expects 13"),
    "empty feats.scp": (lambda e: write(os.path.join(e["data"], "feats.scp"), b""), {}, "feats.scp is empty"),
    "truncated ark": (truncate_ark, {}, "(truncated archive?)"),
    "garbage transition model": (lambda e: write(os.path.join(e["ali"], "final.mdl"), b"\0Bgarbage"), {},
                                 "ali/final.mdl: byte 2: unexpected end of file"),
    "garbage tree": (lambda e: write(os.path.join(e["ali"], "tree"), b"garbage"), {}, "tree: not a Kaldi tree"),
    "transition-id out of range": (lambda e: rewrite_alignments(e, lambda a: a[UTT].__setitem__(0, 999)), {},
                                   f"ali.1.gz: utterance '{UTT}': transition-id 999 out of range"),
    "missing ali dir": (lambda e: os.rename(e["ali"], e["ali"] + ".gone"), {},
                        "ali/final.mdl is missing (--ali-dir: the transition model)"),
    "archive below one minibatch": (lambda e: None, {"--trainer.rnn.num-chunk-per-minibatch": "64"},
                                    "raise --trainer.samples-per-iter or lower --trainer.rnn.num-chunk-per-minibatch"),
    "tree of another system": (lambda e: other_tree().write(True, os.path.join(e["ali"], "tree")), {},
                               "tree: the tree has 8 pdfs but"),
    "network for another model": (lambda e: rewrite_xconfig(e, "dim=NUM_PDFS", "dim=7"), {},
                                  "network.xconfig: the output layer has dim 7 but"),
    "no network": (lambda e: os.remove(os.path.join(e["exp"], "configs", "network.xconfig")), {},
                   "no network: none of configs/network.xconfig, configs/final.config (xconfig_to_configs.py) "
                   "or configs/layer1.config (steps/nnet3/lstm/make_configs.py) is there"),
    "missing input model": (lambda e: None, {"--trainer.input-model": "no-such.raw"},
                            "no-such.raw is missing (--trainer.input-model)"),
    "unwritable dir": (lambda e: write(os.path.join(e["exp"], "log"), b""), {},
                       "cannot create its log directory"),
    "chunk width not a number": (lambda e: None, {"--egs.chunk-width": "20x"},
                                 "--egs.chunk-width: invalid chunk width '20x'"),
    "negative chunk context": (lambda e: None, {"--egs.chunk-left-context": "-3"},
                               "--egs.chunk-left-context must be at least 0, got -3"),
    "minibatch rule not a number": (lambda e: None, {"--trainer.rnn.num-chunk-per-minibatch": "abc"},
                                    "--trainer.rnn.num-chunk-per-minibatch: invalid --minibatch-size='abc'"),
    "unknown xconfig layer": (lambda e: rewrite_xconfig(e, "fast-lstmp-layer", "fast-lstmq-layer"), {},
                              "fast-lstmq-layer"),
    "bad descriptor": (lambda e: rewrite_xconfig(e, "Append(-1,0,1)", "Append(-1,0,1"), {}, "Append(-1,0,1"),
    "no such feat dir": (lambda e: os.rename(e["data"], e["data"] + ".gone"), {},
                         "data: no such directory (--feat-dir: the training data)"),
    "cmvn.scp without a speaker": (lambda e: cmvn_stats(e, speakers=("spk0",)), {"--feat.cmvn-opts": "--norm-means=true"},
                                   "cmvn.scp: has no stats for 1 speaker(s) of utt2spk, e.g. ['spk1']"),
    "utt2spk without an utterance": (lambda e: cmvn_stats(e, utt2spk_without=UTT),
                                     {"--feat.cmvn-opts": "--norm-means=true"},
                                     f"utt2spk: no line for utterance '{UTT}' of feats.scp"),
    "stale utt2num_frames": (lambda e: utt2num_frames(e, lambda f: f.__setitem__(UTT, f[UTT] + 20)), {},
                             f"utt2num_frames: says utterance {UTT} has "),
    "utt2num_frames without an utterance": (lambda e: utt2num_frames(e, lambda f: f.pop(UTT)), {},
                                            f"utt2num_frames: has no line for utterance {UTT} of feats.scp: the "
                                            "file is stale; delete it"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_input_is_one_line_naming_what_is_wrong(tmp_path, capsys, case):
    damage, options, message = ERRORS[case]
    exp = make_experiment(str(tmp_path))
    damage(exp)
    assert main(train_args(exp, **options)) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err
    assert not glob.glob(os.path.join(exp["exp"], "**", ".tmp.*"), recursive=True)
    assert not os.path.exists(os.path.join(exp["exp"], "final.mdl"))
    assert not os.path.exists(os.path.join(exp["exp"], "kaldi_avg.lock"))   # released on the error too


SKIPS = {   # damage, the skipped.log line (exact count) it must give
    "NaN frames, read in every epoch": (lambda e: rewrite_feats(e, nan_frames), "non_finite_features: 1 ("),
    "no alignment": (lambda e: rewrite_alignments(e, lambda a: a.pop(UTT)), "missing_targets: 1 ("),
    "alignment 1 frame short (kept)": (lambda e: rewrite_alignments(e, lambda a: a.__setitem__(UTT, a[UTT][:-1])),
                                       "targets_padded: 1 (1 frames;"),
    "alignment 3 frames short": (lambda e: rewrite_alignments(e, lambda a: a.__setitem__(UTT, a[UTT][:-3])),
                                 "target_length_mismatch: 1 ("),
}


@pytest.mark.parametrize("case", sorted(SKIPS))
def test_skipped_input_is_counted_once_with_its_reason(tmp_path, capsys, case):
    damage, line = SKIPS[case]
    exp = make_experiment(str(tmp_path))
    damage(exp)
    assert main(train_args(exp)) == 0
    with open(os.path.join(exp["exp"], "log", "skipped.log")) as f:
        ledger = f.read()
    assert ledger.count(line) == 1 and UTT in ledger, ledger
    assert "(log/skipped.log)" in capsys.readouterr().err   # the console line gives the reasons


def test_resume_keeps_the_ledger_of_the_iterations_before(tmp_path):
    exp = make_experiment(str(tmp_path))
    rewrite_alignments(exp, lambda a: a.pop(UTT))
    assert main(train_args(exp, **{"--exit-stage": "3"})) == 0
    assert main(train_args(exp, **{"--stage": "3"})) == 0
    with open(os.path.join(exp["exp"], "log", "skipped.log")) as f:
        assert f.read().count("missing_targets: 1 (") == 1


needs_mpiexec = pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "mpiexec")),
                                   reason="no mpiexec")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def two_rank_args(exp, **over) -> list[str]:
    return [a for a in train_args(exp, **over) if not a.startswith("--mpi.")] + ["--mpi.num-ranks=2"]


ECHOES = ("Traceback", "kaldi_avg.parallel", "Abort(", "BAD TERMINATION", "rank.1.failed", "===")


def error_lines(err: str) -> list[str]:
    """The lines that say error; none of the launcher's or MPI's echoes of them may show."""
    assert not [echo for echo in ECHOES if echo in err], err[-3000:]
    return [line for line in err.splitlines() if "error:" in line]


TWO_RANK_ERRORS = {   # damage, extra options, the one line (a bad option never starts the ranks)
    "bad option": (lambda e: None, {"--egs.chunk-width": "20x"},
                   "train_rnn.py: error: --egs.chunk-width: invalid chunk width '20x'"),
    "bad data dir": (lambda e: rewrite_feats(e, wider), {},
                     f"train_rnn.py: error: {{data}}/feats.scp: utterance {UTT} has dim 14, the network's input "
                     "expects 13"),
    "bad xconfig": (lambda e: rewrite_xconfig(e, "fast-lstmp-layer", "fast-lstmq-layer"), {},
                    "network.xconfig:2: unknown layer type 'fast-lstmq-layer'"),
}


@needs_mpiexec
@pytest.mark.parametrize("case", sorted(TWO_RANK_ERRORS))
def test_bad_input_under_two_ranks_is_one_line_too(tmp_path, case):
    damage, options, message = TWO_RANK_ERRORS[case]
    exp = make_experiment(str(tmp_path))
    damage(exp)
    r = subprocess.run([sys.executable, TRAIN_RNN, *two_rank_args(exp, **options)], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode != 0
    errors = error_lines(r.stderr)
    assert len(errors) == 1 and message.format(data=exp["data"]) in errors[0], r.stderr[-3000:]
    assert "resume with" not in r.stderr   # nothing to resume: no iteration finished
    log = os.path.join(exp["exp"], "log", "launcher.log")
    assert case == "bad option" or "kaldi_avg.parallel: rank" in open(log).read()   # the details stay there


@contextlib.contextmanager
def mounted(target, *steps):
    """`mount <step...> target` for each step (root), unmounted after; skips where mount is refused."""
    done = 0
    try:
        for step in steps:
            r = subprocess.run(["mount", *step, target], capture_output=True, text=True)
            if r.returncode:
                pytest.skip(f"cannot mount here: {r.stderr.strip()}")
            done += not step[0].startswith("-o")
        yield
    finally:
        gc.collect()   # the run's memory maps of the pdf store keep a file system busy
        for _ in range(done):
            if subprocess.run(["umount", target], capture_output=True).returncode:
                subprocess.run(["umount", "--lazy", target], capture_output=True)


def read_only(exp):
    os.makedirs(os.path.join(exp["exp"], "log"), exist_ok=True)   # an earlier run's: the first write fails later
    return mounted(exp["exp"], ["--bind", exp["exp"]], ["-o", "remount,bind,ro"])


def test_a_read_only_dir_is_one_line(tmp_path, capsys):
    exp = make_experiment(str(tmp_path))
    with read_only(exp):
        assert main(train_args(exp)) == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "Read-only file system" in errors[0] and exp["exp"] in errors[0], errors


@needs_mpiexec
def test_a_read_only_dir_under_two_ranks_is_one_line_before_any_rank(tmp_path):
    exp = make_experiment(str(tmp_path))
    with read_only(exp):
        r = subprocess.run([sys.executable, TRAIN_RNN, *two_rank_args(exp)], capture_output=True, text=True,
                           timeout=120, env=ENV)
    errors = error_lines(r.stderr)
    assert r.returncode == 1 and len(errors) == 1 and "Read-only file system" in errors[0], r.stderr[-3000:]
    assert "mpiexec" not in r.stderr


class FullDisk:
    """open() for kaldi_avg.atomic whose writes of `name`'s temporary fail as on a full disk."""

    def __init__(self, name):
        self.name = name

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return _FullFile(f) if "w" in mode and str(path).endswith("." + self.name) else f


class _FullFile:
    def __init__(self, f):
        self._f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # names no file, as write(2) does

    def __getattr__(self, name):
        return getattr(self._f, name)


def test_a_full_disk_is_one_line_naming_the_file_and_the_run_resumes(tmp_path, capsys, monkeypatch):
    exp = make_experiment(str(tmp_path))
    args = train_args(exp, **{"--mpi.num-ranks": "1"})
    monkeypatch.setattr("kaldi_avg.atomic.open", FullDisk("3.mdl"), raising=False)
    assert launch.main(args) == 1
    err = capsys.readouterr().err
    errors = error_lines(err)
    assert len(errors) == 1 and "/exp/3.mdl: cannot write: No space left on device" in errors[0], errors
    assert "train_rnn.py: 2.mdl is the last finished iteration; resume with --stage 2" in err, err[-2000:]
    assert not glob.glob(os.path.join(exp["exp"], "**", ".tmp.*"), recursive=True)
    monkeypatch.undo()
    assert launch.main(args + ["--stage=2"]) == 0 and os.path.exists(os.path.join(exp["exp"], "final.mdl"))


def test_a_real_full_disk_is_one_line_too(tmp_path, capsys):
    exp = make_experiment(str(tmp_path))
    configs = open(os.path.join(exp["exp"], "configs", "network.xconfig")).read()
    with mounted(exp["exp"], ["-t", "tmpfs", "-o", "size=160k", "tmpfs"]):
        os.makedirs(os.path.join(exp["exp"], "configs"))
        write(os.path.join(exp["exp"], "configs", "network.xconfig"), configs.encode())
        assert main(train_args(exp)) == 1
        err = capsys.readouterr().err
        errors = error_lines(err)
        assert len(errors) == 1 and "cannot write: No space left on device" in errors[0], err[-3000:]
        assert errors[0].split(": error: ")[1].startswith(exp["exp"])   # the file it could not write
        assert not glob.glob(os.path.join(exp["exp"], "**", ".tmp.*"), recursive=True)


RANK_FAULTS = {   # signal to rank 1, the first failure train_rnn.py must name (its one error line)
    "SIGKILL": "train_rnn.py: error: rank 1/2 (pid {pid} on",
    "SIGSTOP": "train_rnn.py: error: rank 1 sent no heartbeat for 30",   # the watchdog's silence limit
}


LAUNCHERS = {   # how the two ranks start: mpiexec relays their output, an array job's ranks log to log/rank.J.log
    "mpiexec": [],
    "cmd": ["--mpi.launcher=cmd", "--cmd=run.pl"],
}
ON_EVERY_LAUNCHER = [pytest.param("mpiexec", marks=needs_mpiexec), "cmd"]


def wait_for_iteration(proc: subprocess.Popen, exp, launcher: str, n: int = 2) -> str:
    """What the run said until it reported iteration n (or ended): its console, or rank 0's job log."""
    seen, log = "", os.path.join(exp["exp"], "log", "rank.1.log")   # rank 0 reports the iterations
    deadline = time.monotonic() + 120
    while f"iteration {n}/" not in seen and proc.poll() is None and time.monotonic() < deadline:
        if launcher == "cmd":
            time.sleep(0.2)
            if os.path.exists(log):
                with open(log) as f:
                    seen = f.read()
        else:
            seen += proc.stderr.readline()
    return seen


@pytest.mark.parametrize("launcher", ON_EVERY_LAUNCHER)
@pytest.mark.parametrize("fault", sorted(RANK_FAULTS))
def test_a_rank_killed_or_stopped_ends_the_run_naming_it_and_it_resumes(tmp_path, fault, launcher):
    exp = make_experiment(str(tmp_path))
    args = two_rank_args(exp, **{"--trainer.num-epochs": "20"}) + LAUNCHERS[launcher]
    proc = subprocess.Popen([sys.executable, TRAIN_RNN, *args], stderr=subprocess.PIPE, text=True, env=ENV)
    seen = wait_for_iteration(proc, exp, launcher)
    pid = rank_process(exp["exp"], 1)
    assert pid is not None, seen[-2000:]
    os.kill(pid, getattr(signal, fault))
    code = proc.wait(timeout=90)
    err = proc.stderr.read()
    errors = error_lines(err)
    assert code != 0 and len(errors) == 1 and RANK_FAULTS[fault].format(pid=pid) in errors[0], err[-3000:]
    stage = int(err.split("resume with --stage ")[1].split()[0])
    time.sleep(0.5)
    assert processes_mentioning(exp["exp"]) == []   # the stopped rank too
    assert not glob.glob(os.path.join(exp["exp"], "**", ".tmp.*"), recursive=True)
    assert not os.path.exists(os.path.join(exp["exp"], "final.mdl"))
    r = subprocess.run([sys.executable, TRAIN_RNN, *args, f"--stage={stage}"], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0 and os.path.exists(os.path.join(exp["exp"], "final.mdl")), r.stderr[-3000:]


@pytest.mark.parametrize("launcher", ON_EVERY_LAUNCHER)
def test_a_killed_launcher_leaves_no_rank_running_and_its_stale_lock_does_not_stop_the_resume(tmp_path, launcher):
    exp = make_experiment(str(tmp_path))
    args = two_rank_args(exp, **{"--trainer.num-epochs": "200"}) + LAUNCHERS[launcher]
    proc = subprocess.Popen([sys.executable, TRAIN_RNN, *args], stderr=subprocess.PIPE, text=True, env=ENV)
    seen = wait_for_iteration(proc, exp, launcher)
    assert rank_process(exp["exp"], 1) is not None, seen[-2000:]
    proc.kill()   # SIGKILL: it cannot end the ranks itself
    proc.wait()
    t0 = time.monotonic()
    while processes_mentioning(exp["exp"]) and time.monotonic() - t0 < 40:
        time.sleep(0.5)
    assert processes_mentioning(exp["exp"]) == [], "ranks outlived their launcher"
    assert time.monotonic() - t0 < 25   # the heartbeat's 10 s, then the ranks' ends
    if launcher == "cmd":   # the array job's ranks say why in their logs (the first to notice; the other may
        logs = ""           # end on the lost connection first)
        for job in (1, 2):
            with open(os.path.join(exp["exp"], "log", f"rank.{job}.log")) as f:
                logs += f.read()
        assert f"its launcher (train_rnn.py, pid {proc.pid} on" in logs and "is gone" in logs, logs[-3000:]
    stage = max(int(os.path.basename(p).split(".")[0]) for p in glob.glob(os.path.join(exp["exp"], "[0-9]*.mdl")))
    r = subprocess.run([sys.executable, TRAIN_RNN, *args, f"--stage={stage}", f"--exit-stage={stage + 1}"],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    lock = os.path.join(exp["exp"], "kaldi_avg.lock")
    assert f"replaced the stale lock {lock} of pid {proc.pid} on" in r.stderr, r.stderr[-3000:]
    assert not os.path.exists(lock)
