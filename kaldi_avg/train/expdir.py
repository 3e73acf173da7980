"""The experiment directory (`--dir`): every file the trainers read or write there, by name, as
Kaldi's train_rnn.py and train_dnn.py lay it out (docs/kaldi-formats.md 6.10), and kaldi-avg's
own (algorithm state, skip ledger, pdf store, rank reports). icefall's checkpoint.py idea: one
place owns the names, so the driver, the launcher and the reports cannot disagree on them.

Every file there is written through `kaldi_avg/atomic.py` (it appears whole or not at all).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass

_NUMBERED_MODEL = re.compile(r"(\d+)\.mdl")


@dataclass(frozen=True)
class ExpDir:
    root: str

    # -- what Kaldi's scripts leave (docs/kaldi-formats.md 6.10) ----------------------------------
    def path(self, name: str) -> str:
        """<dir>/<name> for the fixed names: final.mdl, combined.mdl, 0.mdl, tree, phones.txt,
        num_jobs, cmvn_opts, srand, pdf_counts, lda.mat, presoftmax_prior_scale.vec, init.raw,
        post.combined.vec, accuracy.report, progress.png, final.ie.id."""
        return os.path.join(self.root, name)

    def model(self, n: int | str) -> str:
        """N.mdl (or combined.mdl, final.mdl)."""
        return self.path(f"{n}.mdl")

    @property
    def configs(self) -> str:
        return self.path("configs")

    def config(self, name: str) -> str:
        return os.path.join(self.configs, name)

    @property
    def log_dir(self) -> str:
        return self.path("log")

    def log(self, name: str) -> str:
        return os.path.join(self.log_dir, name)

    def train_log(self, iteration: int, job: int) -> str:
        """log/train.<iteration>.<1-based job>.log."""
        return self.log(f"train.{iteration}.{job}.log")

    def compute_prob_log(self, kind: str, name: int | str) -> str:
        """log/compute_prob_{valid,train}.<N or combined>.log."""
        return self.log(f"compute_prob_{kind}.{name}.log")

    def numbered_models(self) -> list[int]:
        """The N of every N.mdl there, ascending."""
        return sorted(int(m.group(1)) for p in glob.glob(self.path("*.mdl"))
                      if (m := _NUMBERED_MODEL.fullmatch(os.path.basename(p))))

    # -- kaldi-avg's own ---------------------------------------------------------------------------
    def algo_state(self, n: int) -> str:
        """N.algo.pt: the state an algorithm carries into iteration N (resume with --stage N)."""
        return self.path(f"{n}.algo.pt")

    @property
    def pdf_store(self) -> str:
        return self.path("pdf_store")

    @property
    def ledger(self) -> str:
        """log/skipped.json: the skip ledger, read back on resume."""
        return self.log("skipped.json")

    @property
    def skipped_log(self) -> str:
        return self.log("skipped.log")

    @property
    def data_wait_log(self) -> str:
        return self.log("data_wait.log")

    def rank_failed(self, rank: int) -> str:
        """log/rank.R.failed: why rank R failed, read by the launcher."""
        return self.log(f"rank.{rank}.failed")

    def rank_logs(self) -> str:
        """log/rank.JOB.log, the array job's log pattern (--mpi.launcher=cmd)."""
        return self.log("rank.JOB.log")

    def rendezvous(self, token: str) -> str:
        """The file through which the ranks of an array job meet (absolute: every node reads it)."""
        return os.path.join(os.path.abspath(self.log_dir), f".rendezvous.{token}")
