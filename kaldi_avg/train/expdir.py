"""The experiment directory (`--dir`): every file the trainers read or write there, by name, as
Kaldi's train_rnn.py, train_dnn.py and chain/train.py lay it out (docs/kaldi-formats.md 6.10,
docs/chain.md 9.2; chain's supervision.N.ark stand in for its egs/), and kaldi-avg's
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
        return os.path.join(self.root, name)

    def model(self, n: int | str) -> str:
        """N.mdl (or combined.mdl, final.mdl)."""
        return self.path(f"{n}.mdl")

    def copied(self, source: str) -> str:
        """Where a file Kaldi copies in from another directory goes (tree, phones.txt from the
        alignment dir, final.ie.id from the i-vector dir): its own name in <dir>."""
        return self.path(os.path.basename(source))

    num_jobs = property(lambda self: self.path("num_jobs"))
    cmvn_opts = property(lambda self: self.path("cmvn_opts"))
    srand = property(lambda self: self.path("srand"))
    pdf_counts = property(lambda self: self.path("pdf_counts"))
    lda = property(lambda self: self.path("lda.mat"))
    presoftmax_prior_scale = property(lambda self: self.path("presoftmax_prior_scale.vec"))
    init_raw = property(lambda self: self.path("init.raw"))
    post_combined = property(lambda self: self.path("post.combined.vec"))
    accuracy_report = property(lambda self: self.path("accuracy.report"))
    progress_png = property(lambda self: self.path("progress.png"))
    # chain/train.py's (docs/chain.md 9.2)
    phone_lm = property(lambda self: self.path("phone_lm.fst"))
    den_fst = property(lambda self: self.path("den.fst"))
    normalization_fst = property(lambda self: self.path("normalization.fst"))
    trans_model = property(lambda self: self.path("0.trans_mdl"))
    frame_subsampling_factor = property(lambda self: self.path("frame_subsampling_factor"))
    num_supervision_jobs = property(lambda self: self.path("num_supervision_jobs"))

    @property
    def configs(self) -> str:
        return self.path("configs")

    def config(self, name: str) -> str:
        """configs/<name>: network.xconfig, init.config, final.config, vars, lda.mat, ..."""
        return os.path.join(self.configs, name)

    def config_copy(self, path: str) -> str:
        """configs/<name> of a file of <dir> that the configs read by name (lda.mat,
        presoftmax_prior_scale.vec; Kaldi links them as configs/<name> -> ../<name>)."""
        return self.config(os.path.basename(path))

    @property
    def log_dir(self) -> str:
        return self.path("log")

    def log(self, name: str) -> str:
        """log/<name>: a stage's log (get_transform.log, init_mdl.log, combine.log, ...)."""
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

    @property
    def launcher_log(self) -> str:
        """log/launcher.log: everything the launcher (mpiexec, $cmd) and the ranks through it printed;
        the console gets the progress lines and each failure once (train/launch_report.py)."""
        return self.log("launcher.log")

    def rank_log(self, job: int) -> str:
        """log/rank.<job>.log: one (1-based) job's log of that array job."""
        return self.log(f"rank.{job}.log")

    def rendezvous(self, token: str) -> str:
        """The file through which the ranks of an array job meet (absolute: every node reads it)."""
        return os.path.join(os.path.abspath(self.log_dir), f".rendezvous.{token}")

    @property
    def launcher_heartbeat(self) -> str:
        """log/launcher.heartbeat: touched every second by train_rnn.py/train_dnn.py while its ranks
        run; a rank exits when it stops changing (absolute: every node reads it)."""
        return os.path.join(os.path.abspath(self.log_dir), "launcher.heartbeat")

    @property
    def lock(self) -> str:
        """kaldi_avg.lock: the pid, host and start time of the run using this directory (one at a time)."""
        return self.path("kaldi_avg.lock")
