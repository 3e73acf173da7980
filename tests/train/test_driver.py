"""End-to-end train_rnn.py replacement on a tiny synthetic Kaldi experiment."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")

from kaldi_avg.kaldi.nnet3.am import read_nnet3_file
from kaldi_avg.train.cli import main
from kaldi_avg.train.diagnostics import PROB_RE
from kaldi_avg.train.options import SCRIPTS, get_parser

from .experiment import make_experiment, train_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_RNN = os.path.join(ROOT, "steps", "kaldi_avg", "train_rnn.py")
# the closing line of nnet3-train's log, which Kaldi's report scripts parse
TRAIN_OBJF_RE = re.compile(r"Overall average objective function for 'output' is (\S+) over (\S+) frames")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    exp = make_experiment(str(tmp_path_factory.mktemp("full")))
    assert main(train_args(exp)) == 0
    return exp


def prob_values(exp_dir, kind, key):
    out = {}
    log_dir = os.path.join(exp_dir, "log")
    for name in os.listdir(log_dir):
        if name.startswith(f"compute_prob_{kind}."):
            path = os.path.join(log_dir, name)
            for line in open(path):
                m = PROB_RE.match(f"{path}:{line}")
                if m and m.group(2) == key:
                    out[int(m.group(1))] = float(m.group(3))
    return out


def test_training_reduces_objective_and_logs_like_kaldi(trained):
    d = trained["exp"]
    valid = prob_values(d, "valid", "log-likelihood")
    train = prob_values(d, "train", "log-likelihood")
    assert sorted(valid) == list(range(8)) and sorted(train) == list(range(8))
    assert valid[7] < 0 and valid[7] > valid[0] + 0.3
    assert train[7] > train[0] + 0.3
    objf = []
    for it in range(8):
        text = open(os.path.join(d, "log", f"train.{it}.1.log")).read()
        m = TRAIN_OBJF_RE.findall(text)
        assert m, text
        objf.append(float(m[-1][0]))
        assert re.search(r"^# Accounting: time=\d+ threads=1$", text, re.M)
    assert objf[-1] > objf[0] + 0.3
    assert os.path.exists(os.path.join(d, "log", "train.7.2.log"))  # num-jobs ramp reached 2


def test_experiment_dir_contents(trained):
    d = trained["exp"]
    for name in ("0.mdl", "combined.mdl", "final.mdl", "tree", "cmvn_opts", "num_jobs", "srand",
                 "configs/vars", "configs/final.config", "accuracy.report", "progress.png",
                 "post.combined.vec", "log/combine.log", "log/data_wait.log"):
        assert os.path.exists(os.path.join(d, name)), name
    final = read_nnet3_file(os.path.join(d, "final.mdl"))
    assert final.is_am and final.priors.size == trained["num_pdfs"]
    assert abs(float(final.priors.sum()) - 1.0) < 1e-5 and final.priors.min() > 0
    init = read_nnet3_file(os.path.join(d, "0.mdl"))
    assert abs(float(init.priors.sum()) - 1.0) < 1e-5
    assert "model_left_context=1" in open(os.path.join(d, "configs", "vars")).read()
    report = open(os.path.join(d, "accuracy.report")).read().splitlines()
    assert report[0] == "%Iter\tduration\ttrain_objective\tvalid_objective\tdifference"
    assert len(report) == 1 + 8 + 1 and report[-1].startswith("Total training time is ")
    acc = [float(line.split("\t")[3]) for line in report[1:-1]]
    assert acc[-1] > acc[0]


def test_resume_from_stage_gives_same_final_model(trained, tmp_path):
    exp = make_experiment(str(tmp_path))
    assert main(train_args(exp, **{"--exit-stage": "3"})) == 0
    assert os.path.exists(os.path.join(exp["exp"], "3.mdl"))
    assert not os.path.exists(os.path.join(exp["exp"], "final.mdl"))
    assert main(train_args(exp, **{"--stage": "3"})) == 0
    a = open(os.path.join(trained["exp"], "final.mdl"), "rb").read()
    b = open(os.path.join(exp["exp"], "final.mdl"), "rb").read()
    assert a == b


def test_unknown_option_is_one_line_with_the_closest_names(tmp_path):
    r = subprocess.run([sys.executable, TRAIN_RNN, "--trainer.num-epohcs=1", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "steps/kaldi_avg/train_rnn.py: error: unrecognized option --trainer.num-epohcs "
        "(did you mean --trainer.num-epochs?) (--help lists the options)"]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_of_kaldis_script_is_accepted(script):
    """Kaldi's own option list (kaldi-asr/kaldi f40076610, read from its argparse parsers), with
    its abbreviations: each parses, none is unknown."""
    with open(os.path.join(os.path.dirname(__file__), "kaldi_options.json")) as f:
        kaldi = json.load(f)[script]
    parser = get_parser(script)
    ours = {o for a in parser._actions for o in a.option_strings}
    assert sorted(set(kaldi) - ours) == []
    args = parser.parse_args(["--trainer.num-epoch=3", "--trainer.max-models-combine=7"])
    assert args.trainer_num_epochs == 3.0 and args.trainer_optimization_max_models_combine == 7


def test_unknown_backend_is_one_line_before_any_rank_starts(tmp_path):
    r = subprocess.run([sys.executable, TRAIN_RNN, "--mpi.backend=auto", "--mpi.num-ranks=2", "--dir", str(tmp_path),
                        "--feat-dir", str(tmp_path), "--ali-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--mpi.backend=auto: choose mpi or torch" in r.stderr


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_two_ranks_under_mpiexec_match_one_rank(trained, tmp_path):
    exp = make_experiment(str(tmp_path))
    args = train_args(exp, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec()})
    try:
        r = subprocess.run([sys.executable, TRAIN_RNN] + args, capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
    except subprocess.TimeoutExpired:
        pytest.fail("2-rank run timed out")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[rank 1] rank 1 of 2 on" in r.stderr   # rank 1 took part (it says so when it joins)
    final = read_nnet3_file(os.path.join(exp["exp"], "final.mdl"))
    ref = read_nnet3_file(os.path.join(trained["exp"], "final.mdl"))
    # jobs are placed round-robin on ranks from the same start model: same result up to float sums
    a = final.nnet.components["output.affine"].params()["linear_params"]
    b = ref.nnet.components["output.affine"].params()["linear_params"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_two_ranks_count_each_skipped_utterance_once(tmp_path):
    exp = make_experiment(str(tmp_path), num_short_utts=3)
    args = train_args(exp, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec(), "--trainer.num-epochs": "1"})
    r = subprocess.run([sys.executable, TRAIN_RNN] + args, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    skipped = open(os.path.join(exp["exp"], "log", "skipped.log")).read()
    assert "too_short: 3 (30 frames;" in skipped, skipped


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_failing_rank_ends_all_ranks(tmp_path):
    exp = make_experiment(str(tmp_path))
    os.remove(os.path.join(exp["data"], "feats.ark"))  # every rank fails reading features
    args = train_args(exp, **{"--mpi.num-ranks": "2", "--mpi.launcher": _mpiexec()})
    r = subprocess.run([sys.executable, TRAIN_RNN] + args, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    # The launcher may kill ranks before forwarding their stderr; the report is made from their files,
    # once: one line naming the file.
    reports = [f for f in os.listdir(os.path.join(exp["exp"], "log")) if f.endswith(".failed")]
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert reports and len(errors) == 1 and "feats.ark: No such file" in errors[0], r.stderr[-3000:]


LDA_XCONFIG = """input dim=13 name=input
fixed-affine-layer name=lda delay=5 input=Append(-2,-1,0,1,2) affine-transform-file=configs/lda.mat
fast-lstmp-layer name=lstm1 cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1 decay-time=20
output-layer name=output output-delay=5 dim=NUM_PDFS max-change=1.5
"""


def test_lda_layer_and_label_delay(tmp_path):
    """Stage -3 estimates lda.mat through the init network (delay 5) as train_rnn.py does."""
    exp = make_experiment(str(tmp_path))
    with open(f"{exp['exp']}/configs/network.xconfig", "w") as f:
        f.write(LDA_XCONFIG)
    assert main(train_args(exp, **{"--trainer.num-epochs": "1"})) == 0
    lda = os.path.join(exp["exp"], "lda.mat")
    assert os.path.exists(lda)
    model = read_nnet3_file(os.path.join(exp["exp"], "final.mdl"))
    assert model.nnet.components["lda"].linear_params.shape == (65, 65)
    from kaldi_avg.kaldi.nnet3.context import model_context
    assert model_context(model.nnet) == (0, 7)


TDNNF_XCONFIG = """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=32
tdnnf-layer name=tdnnf2 dim=32 bottleneck-dim=8 time-stride=1 bypass-scale=0.66
tdnnf-layer name=tdnnf3 dim=32 bottleneck-dim=8 time-stride=1 bypass-scale=0.66
linear-component name=prefinal-l dim=16 orthonormal-constraint=-1.0
prefinal-layer name=prefinal input=prefinal-l big-dim=32 small-dim=16
output-layer name=output input=prefinal dim=NUM_PDFS
"""


def _orthonormality_ratio(m: np.ndarray) -> float:
    """trace(P^2) rows / trace(P)^2 for P = M M^T (rows <= cols): 1 for a semi-orthogonal M times a scale."""
    m = m if m.shape[0] <= m.shape[1] else m.T
    p = m.astype(np.float64) @ m.T.astype(np.float64)
    return float(np.trace(p @ p) * p.shape[0] / np.trace(p) ** 2)


def test_tdnnf_trains_with_its_semi_orthogonal_constraint(tmp_path):
    exp = make_experiment(str(tmp_path))
    with open(os.path.join(exp["exp"], "configs", "network.xconfig"), "w") as f:
        f.write(TDNNF_XCONFIG)
    assert main(train_args(exp, **{"--trainer.num-epochs": "6"})) == 0
    start = read_nnet3_file(os.path.join(exp["exp"], "0.mdl")).nnet.components["tdnnf2.linear"]
    final = read_nnet3_file(os.path.join(exp["exp"], "final.mdl")).nnet.components["tdnnf2.linear"]
    assert final.orthonormal_constraint == -1.0
    before = _orthonormality_ratio(start.params()["linear_params"])
    after = _orthonormality_ratio(final.params()["linear_params"])
    assert after < before and after < 1.05, (before, after)


BLSTM_XCONFIG = """input dim=13 name=input
fast-lstmp-layer name=blstm1-forward input=Append(-1,0,1) cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
fast-lstmp-layer name=blstm1-backward input=Append(-1,0,1) cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=1
output-layer name=output input=Append(blstm1-forward, blstm1-backward) dim=NUM_PDFS max-change=1.5
"""


def test_blstm_trains_with_right_context_and_both_derivative_limits(tmp_path):
    """A bidirectional LSTM as Kaldi's run_blstm recipes train it: chunks with extra right context,
    nnet3-train's max-deriv-time-relative = deriv-truncate-margin + model right context."""
    exp = make_experiment(str(tmp_path))
    with open(os.path.join(exp["exp"], "configs", "network.xconfig"), "w") as f:
        f.write(BLSTM_XCONFIG)
    assert main(train_args(exp, **{"--egs.chunk-right-context": "5", "--trainer.deriv-truncate-margin": "4",
                                   "--trainer.num-epochs": "4"})) == 0
    from kaldi_avg.kaldi.nnet3.context import model_context
    left, right = model_context(read_nnet3_file(os.path.join(exp["exp"], "final.mdl")).nnet)
    assert right > 0
    with open(os.path.join(exp["exp"], "log", "train.0.1.log")) as f:
        log = f.read()
    assert f"--optimization.min-deriv-time={-(4 + left)} --optimization.max-deriv-time-relative={4 + right}" in log
    last = max(int(n.split(".")[1]) for n in os.listdir(os.path.join(exp["exp"], "log")) if n.startswith("train."))
    with open(os.path.join(exp["exp"], "log", f"train.{last}.1.log")) as f:
        first_objf, last_objf = (float(TRAIN_OBJF_RE.search(text).group(1)) for text in (log, f.read()))
    assert last_objf > first_objf   # it learns


OPGRU_XCONFIG = """input dim=13 name=input
relu-batchnorm-layer name=tdnn1 input=Append(-1,0,1) dim=16
fast-norm-opgru-layer name=opgru1 cell-dim=12 recurrent-projection-dim=4 non-recurrent-projection-dim=4 delay=-1
output-layer name=output input=opgru1 dim=NUM_PDFS max-change=1.5
"""


def test_opgru_trains_with_its_tanh_statistics(tmp_path, capsys):
    exp = make_experiment(str(tmp_path))
    with open(os.path.join(exp["exp"], "configs", "network.xconfig"), "w") as f:
        f.write(OPGRU_XCONFIG)
    assert main(train_args(exp)) == 0
    assert "WARNING" not in capsys.readouterr().err
    model = read_nnet3_file(os.path.join(exp["exp"], "final.mdl"))
    start = read_nnet3_file(os.path.join(exp["exp"], "0.mdl"))
    w_h = [n for n, c in model.nnet.components.items() if c.type_name == "OutputGruNonlinearityComponent"]
    assert w_h and not np.array_equal(model.nnet.components[w_h[0]].w_h, start.nnet.components[w_h[0]].w_h)
    # The last iteration's model holds the tanh statistics of its jobs; the final combination then
    # recomputes the statistics (the network has BatchNorm), which a GRU keeps only in its update.
    num_iters = max(int(f[:-4]) for f in os.listdir(exp["exp"]) if re.fullmatch(r"\d+\.mdl", f))
    last = read_nnet3_file(os.path.join(exp["exp"], f"{num_iters}.mdl")).nnet.components[w_h[0]]
    assert last.count > 0 and np.all(np.abs(last.value_avg) <= 1) and np.all(last.deriv_avg <= 1)
    assert model.nnet.components[w_h[0]].count == 0
