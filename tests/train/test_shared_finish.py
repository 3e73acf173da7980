"""The fixed costs the ranks share (issue 25): the final combination's objective evaluations go
round robin over the ranks and give what one process finds (lines, choice, model bytes); the
diagnostics of each iteration and of the combined model are computed side by side, valid on the
first rank and train on the last, with the values of the model rank 0 saves."""
import os
import re
import subprocess
import sys

import pytest
import torch

from kaldi_avg.model.build import build_nnet
from kaldi_avg.model.graph import NnetModule
from kaldi_avg.parallel.inprocess import run_ranks
from kaldi_avg.train.combine import combine

from ..model.networks import randomized
from .test_batchnorm_stats import XCONFIG, minibatches


def models(num):
    return [NnetModule(randomized(build_nnet(XCONFIG, "bn.xconfig", seed=2), seed=10 + k, scale=0.3))
            for k in range(num)]


@pytest.mark.parametrize("max_evaluations", [30, 3])
def test_combination_on_ranks_gives_what_one_process_finds(max_evaluations):
    batches = minibatches(3, seed=3)

    def one(comm):
        lines, totals = [], []
        best, result = combine(models(7), batches, max_evaluations, lines.append, comm=comm,
                               progress=lambda total: totals.append(total))
        state = {k: v.clone() for k, v in best.state_dict().items()}
        return lines, result, state, totals

    want_lines, want, want_state, [total] = one(None)
    assert total == len(want.evaluations) == (7 if max_evaluations == 30 else 3)
    assert any("Recomputed" in line for line in want_lines)   # BatchNorm: statistics recomputed
    for size in (2, 3):
        ranks = run_ranks(size, one)
        assert sum(totals[0] for *_, totals in ranks) == total    # each evaluation once
        for lines, result, state, _ in ranks:
            assert lines == want_lines and result == want
            assert state.keys() == want_state.keys()
            assert all(torch.equal(state[k], want_state[k]) for k in state)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else None


@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec")
def test_two_ranks_share_the_diagnostics_and_the_combination(tmp_path):
    """Two ranks write what one rank writes: every compute_prob log (valid by rank 0, train by
    rank 1), combine.log (evaluations shared), combined.mdl, and the priors (each subset's
    minibatches shared) in post.combined.vec and final.mdl."""
    pytest.importorskip("kaldi_hmm_gmm", reason="kaldi-hmm-gmm builds the transition model")
    from .experiment import make_experiment, train_args
    from .test_driver import TRAIN_RNN

    def run(name, ranks):
        exp = make_experiment(str(tmp_path / name))
        args = train_args(exp, **{"--mpi.num-ranks": str(ranks), "--mpi.launcher": _mpiexec()})
        r = subprocess.run([sys.executable, TRAIN_RNN] + args, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 0, r.stderr[-3000:]
        return exp["exp"]
    one, two = run("one", 1), run("two", 2)
    logs = sorted(n for n in os.listdir(os.path.join(one, "log")) if n.startswith("compute_prob_"))
    assert "compute_prob_train.combined.log" in logs and "compute_prob_valid.7.log" in logs
    assert sorted(n for n in os.listdir(os.path.join(two, "log")) if n.startswith("compute_prob_")) == logs

    def body(exp, name):   # without run.pl's header and footer (times, paths)
        return re.sub(r"^#.*\n", "", open(os.path.join(exp, "log", name)).read(), flags=re.M)
    for name in logs + ["combine.log"]:
        assert body(two, name) == body(one, name), name
    for name in ("combined.mdl", "post.combined.vec", "final.mdl",   # the priors too: summed in one order
                 "progress.png"):                                     # drawn by rank 1 before the combination
        assert open(os.path.join(two, name), "rb").read() == open(os.path.join(one, name), "rb").read(), name


def test_the_first_rank_computes_the_valid_diagnostics_and_the_last_the_train_ones_or_idle_ranks_do():
    from types import SimpleNamespace

    from kaldi_avg.parallel import LocalCommunicator
    from kaldi_avg.train.driver import diagnostic_kinds

    def prep(kaldi_jobs):
        return SimpleNamespace(config=SimpleNamespace(averaging=SimpleNamespace(kaldi_jobs=kaldi_jobs)))

    def kinds(size, kaldi_jobs, same_model=False, num_jobs=None):
        return [diagnostic_kinds(prep(kaldi_jobs), SimpleNamespace(rank=r, size=size), same_model, num_jobs)
                for r in range(size)]
    assert diagnostic_kinds(prep(True), LocalCommunicator()) == ("valid", "train")
    assert kinds(3, True) == kinds(3, True, num_jobs=3) == [("valid",), (), ("train",)]
    assert kinds(2, False) == [("valid", "train"), ()]        # an algorithm's workers: rank 0's model
    assert kinds(2, False, same_model=True) == [("valid",), ("train",)]
    # ranks without a job this iteration (the num-jobs ramp) compute them beside the jobs
    assert kinds(2, True, num_jobs=1) == [(), ("valid", "train")]
    assert kinds(4, True, num_jobs=2) == [(), (), ("valid",), ("train",)]
    assert kinds(1, True, num_jobs=1) == [("valid", "train")]


def test_prior_subsets_shared_by_ranks_sum_as_one_process():
    """Each subset's minibatches go round robin over the ranks; the gathered sums are added in one
    process's order, so every rank returns the bits of one process (and of the sequential
    sum over each subset's posterior_sum)."""
    import copy
    from types import SimpleNamespace

    import numpy as np

    from kaldi_avg.data import ChunkConfig, DiagnosticSet, SkipReport
    from kaldi_avg.train.priors import PRIOR_MINIBATCH, posterior_sum, subsets_posterior_sum

    from ..data.synthetic import NUM_PDFS, corpus_lengths, make_source

    lengths = corpus_lengths(40, seed=5, low=100, high=400)
    utts = sorted(lengths)
    config = ChunkConfig((20,), left_context=2, right_context=1)
    data = SimpleNamespace(source=make_source(lengths), archives=SimpleNamespace(archives=[utts[0::2], utts[1::2]]),
                           chunk_config=config, report=SkipReport())
    xconfig = f"input dim=3 name=input\nrelu-renorm-layer name=t1 input=Append(-1,0,1) dim=8\n" \
              f"output-layer name=output input=Append(-1,0) dim={NUM_PDFS}\n"
    module = NnetModule(randomized(build_nnet(xconfig, "p.xconfig", seed=1), seed=1, scale=0.1))
    sequential = np.zeros(NUM_PDFS)
    for k in (0, 1):
        subset = DiagnosticSet(data.source, data.archives.archives[k], config, num_frames=300 * 20,
                               minibatch_size=PRIOR_MINIBATCH, srand=3 + k + 1, name=f"prior{k}")
        assert len(subset) == 2   # with 3 ranks one rank has none of it
        sequential += posterior_sum(module, subset)[0]
    want = subsets_posterior_sum(module, data, range(2), 300, 3)
    assert np.array_equal(want, sequential)
    for size in (2, 3):
        got = run_ranks(size, lambda comm: subsets_posterior_sum(copy.deepcopy(module), data, range(2), 300, 3,
                                                                 comm=comm))
        assert all(np.array_equal(g, want) for g in got)
