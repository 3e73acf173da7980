"""steps/kaldi_avg/chain/train.py end to end on the tiny chain experiment of Kaldi's FSDD lattices
(tests/chain/experiment.py): Kaldi's command line, Kaldi's experiment directory, the chain
objective learned, 2 real ranks against 1, an averaging algorithm against its simulation, and a
SIGTERM resumed with the printed --stage giving the same final.mdl bytes."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.kaldi.transition import read_transition_model

from .experiment import XCONFIG, chain_args, make_chain_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHAIN_TRAIN = os.path.join(ROOT, "steps", "kaldi_avg", "chain", "train.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


needs_mpiexec = pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (the [mpi] extra)")


def run(args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CHAIN_TRAIN, *args], capture_output=True, text=True, timeout=timeout,
                          env=ENV)


def final_bytes(exp) -> bytes:
    with open(os.path.join(exp["dir"], "final.mdl"), "rb") as f:
        return f.read()


def params(exp, name="final.mdl"):
    nnet = read_nnet3_file(os.path.join(exp["dir"], name)).nnet
    return {c: p for c in ("output.affine", "output-xent.affine", "lstm1.W_all")
            for p in [nnet.components[c].params()] if p}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    exp = make_chain_experiment(str(tmp_path_factory.mktemp("chain")))
    r = run(chain_args(exp))
    assert r.returncode == 0, r.stderr[-3000:]
    return exp, r.stderr


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    if _mpiexec() is None:
        pytest.skip("no mpiexec (the [mpi] extra)")
    exp = make_chain_experiment(str(tmp_path_factory.mktemp("chain2")))
    r = run(chain_args(exp, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec()}))
    assert r.returncode == 0, r.stderr[-3000:]
    return exp, r.stderr


def _log_values(path: str, name: str) -> float:
    with open(path) as f:
        text = f.read()
    m = re.search(rf"Overall log-probability for '{name}' is (\S+) per frame, over (\S+) frames\.", text)
    assert m, text
    return float(m.group(1))


def test_kaldis_chain_experiment_dir(trained):
    exp, err = trained
    d = exp["dir"]
    for name in ("0.mdl", "final.mdl", "0.trans_mdl", "tree", "phones.txt", "den.fst", "normalization.fst",
                 "phone_lm.fst", "frame_subsampling_factor", "accuracy.report", "num_jobs", "srand", "cmvn_opts",
                 "configs/final.config", "log/combine.log", "log/compute_prob_valid.final.log",
                 "log/compute_prob_train.final.log", "log/train.0.1.log", "log/get_supervision.1.log"):
        assert os.path.exists(os.path.join(d, name)), name
    assert not os.path.exists(os.path.join(d, "combined.mdl"))        # nnet3-chain-combine writes final.mdl
    assert not os.path.exists(os.path.join(d, "presoftmax_prior_scale.vec"))
    with open(os.path.join(d, "frame_subsampling_factor")) as f:
        assert f.read().strip() == "3"
    final = read_nnet3_file(os.path.join(d, "final.mdl"))
    assert final.priors is None or final.priors.size == 0              # chain models have no priors
    tm = read_transition_model(os.path.join(exp["tree"], "final.mdl"))
    assert final.trans_model.to_bytes(True) == tm.to_bytes(True)
    assert {n.name for n in final.nnet.output_nodes()} == {"output", "output-xent"}
    with open(os.path.join(d, "log", "train.0.1.log")) as f:
        assert f.readline().startswith("# nnet3-chain-train (kaldi-avg job 1, iteration 0)")
    # the objective is learned: the train subset's log-probability rises, the xent branch too
    log = os.path.join(d, "log")
    first = _log_values(os.path.join(log, "compute_prob_train.0.log"), "output")
    last = _log_values(os.path.join(log, "compute_prob_train.final.log"), "output")
    assert last > first + 0.3, (first, last)
    assert _log_values(os.path.join(log, "compute_prob_train.final.log"), "output-xent") > \
        _log_values(os.path.join(log, "compute_prob_train.0.log"), "output-xent")
    with open(os.path.join(d, "accuracy.report")) as f:
        report = f.read().splitlines()
    assert report[0].startswith("%Iter") and len(report) > 3
    assert "supervisions from" in err and "nnet3-chain-combine" in err


def test_every_minibatch_is_the_frame_shifted_chunks_of_its_job(trained):
    """The jobs' frame shifts (nnet3-chain-copy-egs --frame-shift) cycle over 0, 1, 2 as Kaldi's
    (archive index + k / num_archives) mod 3: over the run every shift was trained."""
    from kaldi_avg.data.chunking import frame_shift_offset
    from kaldi_avg.train import schedule
    options = schedule.ScheduleOptions(num_epochs=2, num_jobs_initial=2, num_jobs_final=2, frames_per_eg=3)
    shifts = {frame_shift_offset(f, 3) for it in schedule.plan(options, 3) for f in it.frames}
    assert shifts == {-1, 0, 1}


@needs_mpiexec
def test_two_ranks_train_the_model_one_rank_trains(trained, two_ranks):
    """Kaldi's jobs, round robin on the ranks from the same model: the same final.mdl up to float
    sums."""
    one, two = params(trained[0]), params(two_ranks[0])
    assert "[rank 1] rank 1 of 2 on" in two_ranks[1]
    for name in one:
        for key in one[name]:
            np.testing.assert_allclose(two[name][key], one[name][key], rtol=1e-4, atol=1e-5)


@needs_mpiexec
def test_an_averaging_algorithm_on_two_ranks_equals_its_simulation(tmp_path):
    """BMUF on the chain objective: 2 workers on 2 real ranks give the numbers of 2 simulated
    workers on one rank."""
    over = {"--averaging.algorithm": "bmuf", "--averaging.period-frames": "200", "--trainer.num-epochs": "1"}
    sim = make_chain_experiment(str(tmp_path / "sim"))
    real = make_chain_experiment(str(tmp_path / "real"))
    r = run(chain_args(sim, **over))
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(chain_args(real, **over, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec()}))
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = params(sim), params(real)
    for name in a:
        for key in a[name]:
            np.testing.assert_allclose(b[name][key], a[name][key], rtol=1e-4, atol=1e-5)


@needs_mpiexec
def test_sigterm_then_the_printed_stage_gives_the_same_final_model(two_ranks, tmp_path):
    exp = make_chain_experiment(str(tmp_path))
    args = chain_args(exp, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec()})
    proc = subprocess.Popen([sys.executable, CHAIN_TRAIN, *args], stderr=subprocess.PIPE, text=True, env=ENV)
    seen, deadline = "", time.monotonic() + 120
    while "iteration 3/" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "iteration 3/" in seen, seen[-2000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    rest = proc.stderr.read()
    m = re.search(r"resume with --stage (\d+)", rest)
    assert m, rest[-2000:]
    r = run([*args, f"--stage={m.group(1)}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert final_bytes(exp) == final_bytes(two_ranks[0])


def test_a_network_without_output_xent_stops_in_one_line(tmp_path):
    exp = make_chain_experiment(str(tmp_path))
    with open(os.path.join(exp["dir"], "configs", "network.xconfig"), "w") as f:
        f.write("\n".join(line for line in XCONFIG.splitlines() if "output-xent" not in line) + "\n")
    r = run(chain_args(exp), timeout=120)
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert r.returncode != 0 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "--chain.xent-regularize=0.1 needs an 'output-xent' output node" in errors[0]


def test_missing_lat_dir_is_one_line(tmp_path):
    exp = make_chain_experiment(str(tmp_path))
    r = run(chain_args(exp, **{"--lat-dir": ""}), timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "chain/train.py: error: --lat-dir is required" in r.stderr


def test_lattices_of_another_model_stop_in_one_line_naming_archive_and_utterance(tmp_path):
    exp = make_chain_experiment(str(tmp_path))
    shutil.copy(os.path.join(exp["tree"], "final.mdl"), os.path.join(exp["lat"], "final.mdl"))   # not theirs
    r = run(chain_args(exp), timeout=120)
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert r.returncode != 0 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "no supervision for the utterances" in errors[0] and "lat.1.gz" in errors[0], errors[0]
    assert re.search(r"(sp\d-)?george-0-\d\d", errors[0]), errors[0]
