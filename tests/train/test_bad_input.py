"""Bad input, one fault at a time: a one-line error naming the file and the utterance (exit 1, no
traceback, nothing half-written), or a skip counted exactly once in log/skipped.log; a rank killed
or stopped mid-run ends the run naming it, leaves nothing half-written and no process, and the run
resumes from the stage it names."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.tables import MatrixTable, read_int_vector_table, write_int_vector_table, write_matrix_table
from kaldi_avg.train.cli import main

from .experiment import make_experiment, train_args
from .processes import mpi_rank_process, processes_mentioning

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


@needs_mpiexec
def test_bad_input_under_two_ranks_is_one_line_too(tmp_path):
    exp = make_experiment(str(tmp_path))
    rewrite_feats(exp, wider)
    r = subprocess.run([sys.executable, TRAIN_RNN, *two_rank_args(exp)], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode != 0
    assert f"utterance {UTT} has dim 14, the network's input expects 13" in r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-3000:]


RANK_FAULTS = {   # signal to rank 1, the first failure train_rnn.py must name
    "SIGKILL": "train_rnn.py: first failure: rank 1/2 (pid {pid} on",
    "SIGSTOP": "train_rnn.py: first failure: rank 1 sent no heartbeat for 30",   # the watchdog's silence limit
}


@needs_mpiexec
@pytest.mark.parametrize("fault", sorted(RANK_FAULTS))
def test_a_rank_killed_or_stopped_ends_the_run_naming_it_and_it_resumes(tmp_path, fault):
    exp = make_experiment(str(tmp_path))
    args = two_rank_args(exp, **{"--trainer.num-epochs": "20"})
    proc = subprocess.Popen([sys.executable, TRAIN_RNN, *args], stderr=subprocess.PIPE, text=True, env=ENV)
    seen = ""
    while "iteration 2/" not in seen and proc.poll() is None:
        seen += proc.stderr.readline()
    pid = mpi_rank_process(exp["exp"], 1)
    assert pid is not None, seen[-2000:]
    os.kill(pid, getattr(signal, fault))
    code = proc.wait(timeout=90)
    err = proc.stderr.read()
    assert code != 0 and RANK_FAULTS[fault].format(pid=pid) in err, err[-3000:]
    assert "Traceback" not in err
    stage = int(err.split("resume with --stage ")[1].split()[0])
    time.sleep(0.5)
    assert processes_mentioning(exp["exp"]) == []   # the stopped rank too
    assert not glob.glob(os.path.join(exp["exp"], "**", ".tmp.*"), recursive=True)
    assert not os.path.exists(os.path.join(exp["exp"], "final.mdl"))
    r = subprocess.run([sys.executable, TRAIN_RNN, *args, f"--stage={stage}"], capture_output=True, text=True,
                       timeout=120, env=ENV)
    assert r.returncode == 0 and os.path.exists(os.path.join(exp["exp"], "final.mdl")), r.stderr[-3000:]
