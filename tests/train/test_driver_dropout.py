"""--trainer.dropout-schedule through the training driver: every job of iteration `it` trains with
the schedule's proportion at the fraction of the data processed before `it`, the iteration logs
say so, N.mdl and final.mdl carry the proportion of the iteration that produced them (as
nnet3-train's output does after Kaldi's set-dropout-proportion edit), resuming changes nothing,
and diagnostics, combination and priors run in test mode."""
import glob
import os
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.kaldi.nnet3.context import model_context
from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.cli import main
from kaldi_avg.train.objective import compute_prob
from kaldi_avg.train.priors import posterior_sum

from .experiment import XCONFIG, make_experiment, train_args

DROPOUT_XCONFIG = XCONFIG.replace("delay=-1", "delay=-1 dropout-proportion=0.0")
SCHEDULE = "0,0.3@0.5,0.1"          # up to 0.3 at half the data, then down to 0.1
NUM_EPOCHS = 3                      # train_args' --trainer.num-epochs


def experiment(tmp_path, **over) -> tuple[dict, list[str]]:
    exp = make_experiment(str(tmp_path))
    with open(os.path.join(exp["exp"], "configs", "network.xconfig"), "w") as f:
        f.write(DROPOUT_XCONFIG)
    return exp, train_args(exp, **{"--trainer.dropout-schedule": SCHEDULE, **over})


def logged_proportions(log_dir: str) -> dict[int, float]:
    """{iteration: proportion} from the select/average logs."""
    out = {}
    for path in glob.glob(os.path.join(log_dir, "*.log")):
        m = re.match(r"(?:select|average)\.(\d+)\.log$", os.path.basename(path))
        if m:
            found = re.search(r"dropout pattern/dropout-proportion=\*/(\S+)", open(path).read())
            out[int(m.group(1))] = float(found.group(1))
    return out


def mask_proportion(path: str) -> float:
    return read_nnet3_file(path).nnet.components["lstm1.dropout_mask"].dropout_proportion


def test_kaldi_jobs_follow_the_schedule_and_export_the_last_proportion(tmp_path, capsys):
    exp, args = experiment(tmp_path)
    assert main(args) == 0
    num_archives = int(re.search(r"(\d+) archives", capsys.readouterr().err).group(1))
    log_dir = os.path.join(exp["exp"], "log")
    logged = logged_proportions(log_dir)
    iters = sorted(logged)
    assert iters == list(range(len(iters))) and len(iters) >= 3
    jobs = [len(glob.glob(os.path.join(log_dir, f"train.{it}.*.log"))) for it in iters]
    for it in iters:
        fraction = sum(jobs[:it]) / int(NUM_EPOCHS * num_archives)
        assert logged[it] == pytest.approx(np.interp(fraction, [0.0, 0.5, 1.0], [0.0, 0.3, 0.1]), abs=1e-6)
        for j in range(1, jobs[it] + 1):
            text = open(os.path.join(log_dir, f"train.{it}.{j}.log")).read()
            assert f"set-dropout-proportion name=* proportion={logged[it]}: " \
                   "set dropout proportions for 1 components." in text
        model = os.path.join(exp["exp"], f"{it + 1}.mdl")
        if os.path.exists(model):
            assert mask_proportion(model) == pytest.approx(logged[it], abs=1e-6)
    assert logged[iters[-1]] > 0.05
    assert mask_proportion(os.path.join(exp["exp"], "final.mdl")) == np.float32(logged[iters[-1]])


def test_algorithm_workers_follow_the_schedule_and_resume_identically(tmp_path):
    workers = {"--averaging.algorithm": "ssgd", "--trainer.optimization.num-jobs-initial": "2",
               "--trainer.optimization.num-jobs-final": "2",
               "--trainer.optimization.do-final-combination": "false"}
    exp_a, args_a = experiment(tmp_path / "a", **workers)
    assert main(args_a) == 0
    logged = logged_proportions(os.path.join(exp_a["exp"], "log"))
    assert len(set(logged.values())) >= 3 and logged[0] == 0.0
    assert "set dropout proportions for 1 components." in open(
        os.path.join(exp_a["exp"], "log", "train.1.2.log")).read()
    exp_b, args_b = experiment(tmp_path / "b", **workers, **{"--exit-stage": "2"})
    assert main(args_b) == 0
    assert main([x for x in args_b if not x.startswith("--exit-stage")] + ["--stage=2"]) == 0
    a = open(os.path.join(exp_a["exp"], "final.mdl"), "rb").read()
    b = open(os.path.join(exp_b["exp"], "final.mdl"), "rb").read()
    assert a == b


def test_malformed_schedule_is_an_error_naming_the_option(tmp_path, capsys):
    exp, args = experiment(tmp_path, **{"--trainer.dropout-schedule": "0,0.3@0.7,0.2@0.4,0"})
    assert main(args) == 1   # one line, no traceback
    assert "--trainer.dropout-schedule" in capsys.readouterr().err


def test_diagnostics_and_priors_use_test_mode():
    """compute_prob (diagnostics and combination) and the prior posteriors scale the gates by
    1 - p even when the module is left in training mode, as Kaldi's binaries set test mode."""
    nnet = build_nnet(DROPOUT_XCONFIG.replace("dropout-proportion=0.0", "dropout-proportion=0.5"), "x",
                      num_pdfs=6, seed=1)
    module = NnetModule(nnet)
    left, right = model_context(nnet)
    g = torch.Generator().manual_seed(0)
    mb = SimpleNamespace(features=torch.randn(3, left + 10 + right, 13, generator=g), left_context=left,
                         targets=torch.randint(0, 6, (3, 10), generator=g), weights=torch.ones(3, 10), ivectors=None,
                         frame_subsampling_factor=1)
    with torch.no_grad():
        expected = module.eval()(mb.features, left, 10)
    module.train()
    stats = compute_prob(module, [mb])
    assert stats.objf == pytest.approx(float(expected.gather(-1, mb.targets[..., None]).sum()), rel=1e-5)
    post, _ = posterior_sum(module, [mb])
    np.testing.assert_allclose(post, expected.double().exp().sum(dim=(0, 1)).numpy(), rtol=1e-5)
    assert module.training
