"""Every `--averaging.algorithm` through the training driver: simulated N on one rank, real ranks
under mpiexec giving the same numbers as simulated ones, resume, and option errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.parallel import ALGORITHMS
from kaldi_avg.train.cli import main

from .experiment import make_experiment, train_args
from .test_driver import TRAIN_RNN, _mpiexec

# Short runs: 2 epochs of 4 workers, averaging every 40 frames per worker (a few syncs per iteration).
FIXED = {"--trainer.optimization.num-jobs-initial": "4", "--trainer.optimization.num-jobs-final": "4",
         "--trainer.num-epochs": "2", "--trainer.optimization.do-final-combination": "false"}
OPTIONS = {
    "ma": {"--averaging.period-frames": "40"},
    "bmuf": {"--averaging.period-frames": "40"},
    "easgd": {"--averaging.period-frames": "40"},
    "asgd": {"--averaging.period-frames": "40"},
    "ssgd": {},
    "adpsgd": {"--averaging.period-frames": "40"},
    "hadpsgd": {"--averaging.group-size": "2"},
    "adpsgd-delay1": {"--averaging.period-frames": "40"},
    "post-local-sgd": {"--averaging.period-frames": "40"},
}


def output_params(exp_dir, name="final.mdl"):
    nnet = read_nnet3_file(os.path.join(exp_dir, name)).nnet
    return nnet.components["output.affine"].params()["linear_params"]


def train(tmp_path, algorithm, **over):
    exp = make_experiment(str(tmp_path))
    opts = {**FIXED, "--averaging.algorithm": algorithm, **OPTIONS[algorithm], **over}
    return exp, train_args(exp, **opts)


def test_every_algorithm_is_tested():
    assert set(OPTIONS) == set(ALGORITHMS)


@pytest.mark.parametrize("algorithm", sorted(OPTIONS))
def test_simulated_workers_train_and_export(tmp_path, algorithm):
    exp, args = train(tmp_path, algorithm)
    assert main(args) == 0
    final = read_nnet3_file(os.path.join(exp["exp"], "final.mdl"))
    assert final.priors is not None and np.all(np.isfinite(output_params(exp["exp"])))
    log_dir = os.path.join(exp["exp"], "log")
    assert os.path.exists(os.path.join(log_dir, "train.0.4.log"))   # four workers, each with its log
    text = open(os.path.join(log_dir, "average.0.log")).read()
    assert f"'algorithm': '{algorithm}'" in text and "'workers': 4" in text


def test_ma_period_1_equals_ssgd_in_the_driver(tmp_path):
    """Algorithm oracle through the whole driver: plain SGD (no momentum, a learning rate too small
    for any max-change to act) with averaging after every step is gradient averaging."""
    plain = {"--trainer.optimization.momentum": "0", "--trainer.optimization.shrink-value": "1.0",
             "--trainer.optimization.initial-effective-lrate": "0.0005",
             "--trainer.optimization.final-effective-lrate": "0.0005"}
    exp_ma, args_ma = train(tmp_path / "ma", "ma", **{**plain, "--averaging.period-frames": "0"})
    exp_ss, args_ss = train(tmp_path / "ssgd", "ssgd", **plain)
    assert main(args_ma) == 0 and main(args_ss) == 0
    for exp in (exp_ma, exp_ss):
        assert "max-change was enforced 0 times; global max-change 0 times" in open(
            os.path.join(exp["exp"], "log", "train.1.1.log")).read()
    np.testing.assert_allclose(output_params(exp_ma["exp"], "2.mdl"), output_params(exp_ss["exp"], "2.mdl"),
                               rtol=1e-4, atol=1e-6)


def test_resume_gives_the_same_model(tmp_path):
    """post-local SGD carries its phase across iterations: stopping and resuming must not lose it."""
    exp_a, args_a = train(tmp_path / "a", "post-local-sgd")
    assert main(args_a) == 0
    exp_b, args_b = train(tmp_path / "b", "post-local-sgd", **{"--exit-stage": "2"})
    assert main(args_b) == 0
    assert os.path.exists(os.path.join(exp_b["exp"], "2.algo.pt"))
    assert main([x for x in args_b if not x.startswith("--exit-stage")] + ["--stage=2"]) == 0
    a = open(os.path.join(exp_a["exp"], "final.mdl"), "rb").read()
    b = open(os.path.join(exp_b["exp"], "final.mdl"), "rb").read()
    assert a == b


def test_num_jobs_ramp_is_rejected_for_fixed_worker_algorithms(tmp_path, capsys):
    exp, args = train(tmp_path, "bmuf", **{"--trainer.optimization.num-jobs-initial": "1"})
    assert main(args) == 1   # one line, no traceback
    assert "fixed number of workers" in capsys.readouterr().err


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
@pytest.mark.parametrize("algorithm,backend", [("bmuf", "mpi"), ("ssgd", "torch"), ("adpsgd", "mpi")])
def test_two_real_ranks(tmp_path, algorithm, backend):
    """Synchronous algorithms: 2 ranks x 2 workers give the numbers of 4 simulated workers, over
    mpi4py or torch.distributed (gloo). adpsgd (asynchronous, gossip threads across ranks; 1 worker
    per rank): trains and exports."""
    workers = "2" if algorithm == "adpsgd" else "4"
    size = {"--trainer.optimization.num-jobs-initial": workers, "--trainer.optimization.num-jobs-final": workers}
    exp, args = train(tmp_path / "real", algorithm, **size, **{"--mpi.num-ranks": "2", "--mpi.backend": backend,
                                                                "--mpi.launcher": _mpiexec()})
    try:
        r = subprocess.run([sys.executable, TRAIN_RNN] + args, capture_output=True, text=True, timeout=240,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail(f"2-rank {algorithm} run timed out")
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.all(np.isfinite(output_params(exp["exp"])))
    if algorithm != "adpsgd":
        exp_sim, args_sim = train(tmp_path / "sim", algorithm, **size)
        assert main(args_sim) == 0
        # The same updates up to float32 round-off (summation orders differ across ranks, and
        # NG-SGD's float32 products, as in Kaldi, carry them on): compare what training changed,
        # so an error in the algorithm (a wrong weight, a missed worker) still shows at once.
        start = output_params(exp["exp"], "0.mdl")
        real, sim = output_params(exp["exp"], "2.mdl") - start, output_params(exp_sim["exp"], "2.mdl") - start
        assert np.linalg.norm(real - sim) <= 1e-3 * np.linalg.norm(sim)   # measured: 1e-4


@pytest.mark.parametrize("algorithm", ["easgd", "bmuf", "ma"])
def test_period_longer_than_an_iteration_still_learns(tmp_path, algorithm):
    """The iteration's end is a synchronization: what the workers learned must reach N.mdl even
    when no period elapsed (EASGD's centre once stayed at 0.mdl here)."""
    exp, args = train(tmp_path, algorithm, **{"--averaging.period-frames": "1000000", "--exit-stage": "1"})
    assert main(args) == 0
    assert not np.allclose(output_params(exp["exp"], "0.mdl"), output_params(exp["exp"], "1.mdl"))


def test_unimplemented_trainer_options_are_errors(tmp_path, capsys):
    exp, args = train(tmp_path, "ma", **{"--trainer.optimization.backstitch-training-scale": "0.3"})
    assert main(args) == 1   # one line, no traceback
    assert "backstitch-training-scale is not implemented" in capsys.readouterr().err


def test_the_last_model_written_is_always_resumable(tmp_path, monkeypatch):
    """A run killed while saving iteration 1 (here: the write of 2.mdl fails) leaves 1.mdl as the last
    model, with its algorithm state: the launcher's hint, the last N.mdl, resumes (the state is
    written before the model, so no N.mdl lacks its N.algo.pt)."""
    from kaldi_avg.kaldi.nnet3.am import Nnet3Model
    from kaldi_avg.train.launch import last_model
    exp, args = train(tmp_path, "bmuf")
    real_write = Nnet3Model.write

    def killed_at_3(self, path, *a, **k):
        if os.path.basename(path) == "2.mdl":
            raise KeyboardInterrupt("killed while writing 2.mdl")
        return real_write(self, path, *a, **k)
    monkeypatch.setattr(Nnet3Model, "write", killed_at_3)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(Nnet3Model, "write", real_write)
    stage = last_model(exp["exp"])
    assert stage == 1 and os.path.exists(os.path.join(exp["exp"], "2.algo.pt"))
    assert main(args + [f"--stage={stage}"]) == 0
    assert os.path.exists(os.path.join(exp["exp"], "final.mdl"))
