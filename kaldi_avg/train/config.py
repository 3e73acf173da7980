"""The run's configuration: typed, frozen, validated once from the command line.

`RunConfig.from_args(args)` is the only place that reads the parsed options
(kaldi_avg/train/options.py); every other module receives the typed pieces. A combination that
would train in a way the user did not ask for raises `ConfigError` (one line, no traceback).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ..chain.objective import ChainTrainingOptions
from ..data.chunking import parse_chunk_widths
from ..data.merging import MinibatchSizeRule
from ..errors import UsageError
from ..parallel import DEFAULT_ALGORITHM_OPTIONS, AlgorithmOptions, algorithm_class, algorithm_options
from .dropout import DropoutScheduleError, parse_dropout_schedule
from .options import SCRIPTS, ignored_options
from .schedule import ScheduleOptions


class ConfigError(UsageError):
    """Options that cannot be trained as given; the message says which option to change."""


@dataclass(frozen=True)
class EgsOptions:
    """--egs.chunk-* (train_rnn.py) or --egs.frames-per-eg (train_dnn.py: the width, no extra
    context): how utterances are cut into egs (docs/kaldi-formats.md 8.6, 6.12)."""

    width: str = "20"
    left_context: int = 40
    right_context: int = 0
    left_context_initial: int = -1
    right_context_final: int = -1


@dataclass(frozen=True)
class ChainOptions:
    """--chain.*: chain/train.py's objective and supervision (docs/chain.md 9)."""

    training: ChainTrainingOptions = ChainTrainingOptions()   # l2, leaky HMM, xent, deriv weights
    frame_subsampling_factor: int = 3
    alignment_subsampling_factor: int = 3     # lattice frames per output frame
    left_tolerance: int = 5
    right_tolerance: int = 5
    lm_opts: str = ""                          # chain-est-phone-lm's options


@dataclass(frozen=True)
class TrainerOptions:
    """What one job does with its minibatches, and the final stages (train_rnn.py's defaults)."""

    srand: int = 0
    momentum: float = 0.5
    samples_per_iter: int = 20000
    frames_per_iter: int | None = None      # chain/train.py: archives of this many input frames
    shuffle_buffer_size: int = 5000
    deriv_truncate_margin: int | None = 8   # None: no derivative truncation (train_dnn.py)
    shrink_value: float = 0.99              # 1.0: no saturation shrinkage (train_dnn.py has none)
    shrink_saturation_threshold: float = 0.40
    proportional_shrink: float = 0.0
    do_final_combination: bool = True
    max_objective_evaluations: int = 30
    prior_subset_size: int = 20000
    num_jobs_compute_prior: int = 10
    max_lda_jobs: int = 10
    presoftmax_prior_scale_power: float = -0.25


@dataclass(frozen=True)
class AveragingOptions:
    """--averaging.*: the distributed algorithm's typed options (its `Options` dataclass,
    kaldi_avg.parallel.registry)."""

    options: AlgorithmOptions = DEFAULT_ALGORITHM_OPTIONS

    @property
    def algorithm(self) -> str:
        return algorithm_class(self.options).name

    @property
    def kaldi_jobs(self) -> bool:
        """Kaldi's own iteration (independent jobs, then select/average), as the options say
        (`AlgorithmOptions.kaldi_jobs`: unless another algorithm or an averaging period is asked for)."""
        return self.options.kaldi_jobs


@dataclass(frozen=True)
class LaunchOptions:
    """How the ranks run: --mpi.*, --num-threads, --use-gpu, --cmd."""

    launcher: str = "auto"
    num_ranks: int | None = None     # None: decided by the launcher (kaldi_avg/train/launch.py)
    backend: str | None = None      # None: mpi under an MPI launcher, torch for cmd (launch.py)
    num_threads: int = 1
    use_gpu: str = "yes"
    cmd: str = "run.pl"
    hostfile: str | None = None

    @property
    def device(self) -> str:
        return "cuda" if self.use_gpu not in ("no", "false") and torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class RunConfig:
    script: str             # the Kaldi script the run stands in for: train_rnn.py, train_dnn.py, chain/train.py
    dir: str
    feat_dir: str
    ali_dir: str            # transition model, tree, ali.*.gz: --ali-dir, or chain/train.py's --tree-dir
    lat_dir: str | None = None        # chain/train.py's --lat-dir
    chain: ChainOptions | None = None   # chain/train.py's --chain.*: the LF-MMI objective
    cmvn_opts: str = ""
    online_ivector_dir: str | None = None
    input_model: str | None = None    # a raw nnet3 network instead of configs/ (train/network.py)
    stage: int = -4
    exit_stage: int | None = None
    cleanup: bool = True
    preserve_model_interval: int = 100
    egs: EgsOptions = EgsOptions()
    schedule: ScheduleOptions = ScheduleOptions()
    trainer: TrainerOptions = TrainerOptions()
    averaging: AveragingOptions = AveragingOptions()
    launch: LaunchOptions = LaunchOptions()
    ignored: tuple[tuple[str, str], ...] = ()    # (flag, reason) of ignored options the user set

    @property
    def device(self) -> str:
        return self.launch.device

    @property
    def min_deriv_time_margin(self) -> int | None:
        """--trainer.deriv-truncate-margin, None when negative (no truncation)."""
        margin = self.trainer.deriv_truncate_margin
        return None if margin is None or margin < 0 else margin

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        a = args
        script = SCRIPTS[a.script]
        required = ((("--tree-dir", "tree_dir"), ("--lat-dir", "lat_dir")) if script.chain else
                    (("--ali-dir", "ali_dir"),))
        for flag, dest in (("--feat-dir", "feat_dir"), *required, ("--dir", "dir")):
            if not getattr(a, dest):
                raise ConfigError(f"{flag} is required")
        if a.trainer_optimization_backstitch_training_scale:
            raise ConfigError("--trainer.optimization.backstitch-training-scale is not implemented by kaldi-avg")
        try:
            dropout = tuple(parse_dropout_schedule(a.trainer_dropout_schedule)) if a.trainer_dropout_schedule else ()
        except DropoutScheduleError as e:
            raise ConfigError(str(e)) from None
        try:
            averaging = AveragingOptions(algorithm_options(a))
        except ValueError as e:
            raise ConfigError(f"--averaging.*: {e}") from None
        chain, frames_per_iter = None, None
        if script.frame_level:   # train_dnn.py: egs of frames-per-eg frames, the model's context only
            egs = EgsOptions(str(a.egs_frames_per_eg), 0, 0)
            minibatch, frames_per_eg = a.trainer_optimization_minibatch_size, a.egs_frames_per_eg
            margin, shrink, threshold = None, 1.0, 0.0   # no derivative truncation, no saturation shrinkage
        else:
            egs = EgsOptions(a.egs_chunk_width, a.egs_chunk_left_context, a.egs_chunk_right_context,
                                 a.egs_chunk_left_context_initial, a.egs_chunk_right_context_final)
            minibatch, frames_per_eg = a.trainer_rnn_num_chunk_per_minibatch if not script.chain else \
                a.trainer_num_chunk_per_minibatch, None
            margin, shrink, threshold = (a.trainer_deriv_truncate_margin, a.trainer_optimization_shrink_value,
                                         a.trainer_optimization_shrink_saturation_threshold)
        if script.chain:
            chain = cls._chain_options(a)
            frames_per_eg, frames_per_iter = chain.frame_subsampling_factor, a.trainer_frames_per_iter
            if a.chain_left_deriv_truncate is not None:   # Kaldi's process_args: the deprecated spelling
                margin = -a.chain_left_deriv_truncate
        config = cls(
            script=script.name, dir=a.dir, feat_dir=a.feat_dir, ali_dir=a.tree_dir if script.chain else a.ali_dir,
            lat_dir=getattr(a, "lat_dir", None), chain=chain, cmvn_opts=a.feat_cmvn_opts or "",
            online_ivector_dir=a.feat_online_ivector_dir, input_model=a.trainer_input_model, stage=a.stage,
            exit_stage=a.exit_stage, cleanup=a.cleanup, preserve_model_interval=a.cleanup_preserve_model_interval,
            egs=egs,
            schedule=ScheduleOptions(
                num_epochs=a.trainer_num_epochs, num_jobs_initial=a.trainer_optimization_num_jobs_initial,
                num_jobs_final=a.trainer_optimization_num_jobs_final,
                num_jobs_step=a.trainer_optimization_num_jobs_step,
                initial_effective_lrate=a.trainer_optimization_initial_effective_lrate,
                final_effective_lrate=a.trainer_optimization_final_effective_lrate,
                max_param_change=a.trainer_max_param_change, minibatch_size=minibatch,
                dropout=dropout, max_models_combine=a.trainer_optimization_max_models_combine,
                frames_per_eg=frames_per_eg),
            trainer=TrainerOptions(
                srand=a.trainer_srand, momentum=a.trainer_optimization_momentum,
                samples_per_iter=a.trainer_samples_per_iter, frames_per_iter=frames_per_iter,
                shuffle_buffer_size=a.trainer_shuffle_buffer_size,
                deriv_truncate_margin=margin, shrink_value=shrink, shrink_saturation_threshold=threshold,
                proportional_shrink=a.trainer_optimization_proportional_shrink,
                do_final_combination=a.trainer_optimization_do_final_combination,
                max_objective_evaluations=a.trainer_optimization_max_objective_evaluations,
                prior_subset_size=getattr(a, "trainer_prior_subset_size", 0),
                num_jobs_compute_prior=getattr(a, "trainer_num_jobs_compute_prior", 0),
                max_lda_jobs=a.trainer_lda_max_lda_jobs,
                presoftmax_prior_scale_power=a.trainer_presoftmax_prior_scale_power),
            averaging=averaging,
            launch=LaunchOptions(a.mpi_launcher, a.mpi_num_ranks, a.mpi_backend, a.num_threads, a.use_gpu, a.cmd,
                                 a.mpi_hostfile),
            ignored=tuple(ignored_options(a)))
        config.validate()
        return config

    @staticmethod
    def _chain_options(a: argparse.Namespace) -> ChainOptions:
        try:
            training = ChainTrainingOptions(
                l2_regularize=a.chain_l2_regularize, leaky_hmm_coefficient=a.chain_leaky_hmm_coefficient,
                xent_regularize=a.chain_xent_regularize, apply_deriv_weights=a.chain_apply_deriv_weights)
        except ValueError as e:   # the option named as Kaldi's chain/train.py spells it
            raise ConfigError(str(e).replace("--", "--chain.", 1)) from None
        return ChainOptions(training, a.chain_frame_subsampling_factor, a.chain_alignment_subsampling_factor,
                            a.chain_left_tolerance, a.chain_right_tolerance, a.chain_lm_opts or "")

    def validate(self) -> None:
        """Every option value checked before any work, as Kaldi's process_args (and more strictly):
        a bad one is a ConfigError naming the option."""
        problem = next(self._problems(), None)
        if problem:
            raise ConfigError(problem)
        s = self.schedule
        if self.averaging.kaldi_jobs:
            return
        if s.num_jobs_initial != s.num_jobs_final:
            raise ConfigError(f"--averaging.algorithm={self.averaging.algorithm} (or an explicit "
                              "--averaging.period-frames) trains a fixed number of workers: set "
                              "--trainer.optimization.num-jobs-initial equal to --trainer.optimization.num-jobs-final "
                              f"(got {s.num_jobs_initial} and {s.num_jobs_final})")
        if self.launch.num_ranks is not None:
            self.check_world(self.launch.num_ranks)

    def _problems(self):
        """The first of these messages that applies is the error."""
        s, t, e = self.schedule, self.trainer, self.egs
        archive_size = (("--trainer.frames-per-iter", t.frames_per_iter) if self.chain else
                        ("--trainer.samples-per-iter", t.samples_per_iter))
        positive = {"--trainer.num-epochs": s.num_epochs, archive_size[0]: archive_size[1],
                    "--trainer.optimization.initial-effective-lrate": s.initial_effective_lrate,
                    "--trainer.optimization.final-effective-lrate": s.final_effective_lrate,
                    "--trainer.max-param-change": s.max_param_change,
                    "--trainer.shuffle-buffer-size": t.shuffle_buffer_size,
                    "--trainer.lda.max-lda-jobs": t.max_lda_jobs,
                    "--trainer.optimization.max-models-combine": s.max_models_combine,
                    "--trainer.optimization.num-jobs-initial": s.num_jobs_initial,
                    "--trainer.optimization.num-jobs-final": s.num_jobs_final,
                    "--trainer.optimization.num-jobs-step": s.num_jobs_step,
                    "--cleanup.preserve-model-interval": self.preserve_model_interval,
                    "--num-threads": self.launch.num_threads}
        if not self.chain:
            positive.update({"--trainer.prior-subset-size": t.prior_subset_size,
                             "--trainer.num-jobs-compute-prior": t.num_jobs_compute_prior})
        yield from (f"{flag} must be positive, got {value}" for flag, value in positive.items() if not value > 0)
        yield from self._chain_problems()
        if not 0.0 <= t.momentum < 1.0:
            yield f"--trainer.optimization.momentum must be in [0, 1), got {t.momentum}"
        if t.proportional_shrink < 0:
            yield f"--trainer.optimization.proportional-shrink must be >= 0, got {t.proportional_shrink}"
        if s.frames_per_eg is None or self.chain:   # --egs.chunk-* (train_dnn.py sets them itself)
            try:
                parse_chunk_widths(e.width)
            except ValueError as err:
                yield f"--egs.chunk-width: {err}"
            for flag, value, least in (("--egs.chunk-left-context", e.left_context, 0),
                                       ("--egs.chunk-right-context", e.right_context, 0),
                                       ("--egs.chunk-left-context-initial", e.left_context_initial, -1),
                                       ("--egs.chunk-right-context-final", e.right_context_final, -1)):
                if value < least:
                    yield f"{flag} must be at least {least}, got {value}"
        elif s.frames_per_eg < 1:
            yield f"--egs.frames-per-eg must be at least 1, got {s.frames_per_eg}"
        try:
            MinibatchSizeRule.parse(s.minibatch_size)
        except ValueError as err:
            flag = ("--trainer.num-chunk-per-minibatch" if self.chain else "--trainer.optimization.minibatch-size"
                    if s.frames_per_eg else "--trainer.rnn.num-chunk-per-minibatch")
            yield f"{flag}: {err}"
        if self.launch.use_gpu not in ("yes", "no", "wait", "true", "false"):
            yield f"--use-gpu={self.launch.use_gpu}: choose yes, no, wait, true or false"
        if self.launch.backend not in (None, "mpi", "torch"):
            yield f"--mpi.backend={self.launch.backend}: choose mpi or torch (or leave it out)"

    def _chain_problems(self):
        c = self.chain
        if c is None:
            return
        f, a = c.frame_subsampling_factor, c.alignment_subsampling_factor
        if f < 1 or a < 1:
            yield f"--chain.frame-subsampling-factor={f} and --chain.alignment-subsampling-factor={a} must be >= 1"
        elif c.left_tolerance < 0 or c.right_tolerance < 0 or c.left_tolerance + c.right_tolerance + 1 < a:
            yield (f"--chain.left-tolerance={c.left_tolerance} and --chain.right-tolerance={c.right_tolerance} must "
                   f"be >= 0 with left + right + 1 >= --chain.alignment-subsampling-factor={a}")
        if self.trainer.deriv_truncate_margin is not None and self.trainer.deriv_truncate_margin < 0:
            yield f"--trainer.deriv-truncate-margin must be >= 0, got {self.trainer.deriv_truncate_margin}"

    def check_world(self, num_ranks: int) -> None:
        """The algorithms other than Kaldi's give every rank the same number of workers."""
        nj = self.schedule.num_jobs_final
        if not self.averaging.kaldi_jobs and nj % num_ranks:
            raise ConfigError(f"--trainer.optimization.num-jobs-final={nj} workers cannot be shared equally by "
                              f"{num_ranks} ranks: make it a multiple of --mpi.num-ranks")
