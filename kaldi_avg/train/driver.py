"""The train_rnn.py stage as persistent ranks (docs/kaldi-formats.md 6.2-6.10).

    get_parser()          Kaldi's train_rnn.py options (+ --averaging.*, --mpi.*)
    get_params(args)      validated, derived settings
    compute_loss(...)     one minibatch: -(summed weighted log-likelihood), objf, frames
    make_iterations(...)  what an iteration does: Kaldi's jobs, or a kaldi_avg.parallel algorithm
    run(rank, ws, args)   setup stages, iterations, combination, priors, reports

Every iteration writes `N.mdl`, `N.algo.pt` (the algorithm state that crosses iterations) and
`checkpoint.pt`; `--stage N` (N >= 0) resumes from them: everything else (archives, schedule,
data order, seeds) is a function of the options, so the result is the same.
"""
from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..data import ChunkConfig, DiagnosticSet, SkipReport, UtteranceSource, plan_archives, screen_utterances
from ..parallel import DEFAULT, Communicator, LocalCommunicator, add_algorithm_options, build_algorithm
from ..kaldi.alignment import match_alignments, pdf_counts, read_alignments
from ..kaldi.binary import KaldiWriter
from ..kaldi.cmvn import CmvnApplier, parse_cmvn_opts
from ..kaldi.datadir import DataDir, read_kaldi_map
from ..atomic import write_bytes
from ..kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from ..kaldi.nnet3.context import model_context
from ..kaldi.tables import MatrixTable
from ..kaldi.transition import read_transition_model
from ..kaldi.xconfig import write_config_dir
from ..model.build import build_nnet, xconfig_context
from ..model.checkpoint import Checkpoint
from ..model.graph import NnetModule
from . import schedule as sched
from .combine import combine
from .diagnostics import (compute_prob, plot_progress, write_accuracy_report, write_compute_prob_log,
                          write_simple_log)
from .dropout import (DropoutSchedule, DropoutScheduleError, describe, dropout_proportions,
                      parse_dropout_schedule)
from .iterations import AlgorithmWorkers, KaldiJobs
from .learner import compute_loss  # noqa: F401 - part of the driver's interface (icefall's skeleton)
from .priors import adjust_priors, alignment_priors, posterior_sum

# Options train_rnn.py has that mean nothing without egs / GPUs / queues: accepted, reported.
IGNORED = ("cmd", "use_gpu", "egs_stage", "egs_opts", "egs_cmd", "egs_dir", "cleanup_remove_egs",
           "reporting_email", "reporting_interval", "trainer_shuffle_buffer_size_note",
           "lang", "trainer_num_jobs_compute_prior_note", "trainer_presoftmax_prior_scale_power",
           "trainer_lda_max_lda_jobs", "trainer_lda_rand_prune", "trainer_compute_per_dim_accuracy")


def _bool(text: str) -> bool:
    t = str(text).lower()
    if t in ("true", "yes", "1"):
        return True
    if t in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # list the supported options on any error
        opts = sorted(o for a in self._actions for o in a.option_strings if o.startswith("--"))
        self.exit(2, f"{self.prog}: error: {message}\nsupported options: {' '.join(opts)}\n")


def get_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="steps/kaldi_avg/train_rnn.py", allow_abbrev=False,
                description="Kaldi train_rnn.py replacement: persistent MPI ranks, no egs dump.")

    def add(name, default=None, type=str, help="", **kw):
        p.add_argument(name, dest=name.lstrip("-").replace(".", "_").replace("-", "_"), default=default,
                       type=type, help=help, **kw)

    add("--stage", -4, int, "restart stage; N >= 0 resumes from N.mdl")
    add("--exit-stage", None, int, "stop before this iteration")
    add("--cmd", "run.pl", help="ignored (ranks run under --mpi.launcher)")
    add("--use-gpu", "yes", help="yes/no/wait; CUDA is used when available and not 'no'")
    add("--feat-dir", None, help="data dir with feats.scp")
    add("--ali-dir", None, help="alignment dir (ali.*.gz, final.mdl, tree, num_jobs)")
    add("--lang", None, help="accepted, unused (as in Kaldi)")
    add("--dir", None, help="experiment dir with configs/network.xconfig")
    add("--feat.cmvn-opts", "", help="apply-cmvn options")
    add("--feat.online-ivector-dir", None)
    add("--egs.chunk-width", "20")
    add("--egs.chunk-left-context", 40, int)
    add("--egs.chunk-right-context", 0, int)
    add("--egs.chunk-left-context-initial", -1, int)
    add("--egs.chunk-right-context-final", -1, int)
    add("--egs.dir", None, help="ignored: no egs are dumped")
    add("--egs.stage", 0, int, "ignored")
    add("--egs.opts", None, help="ignored")
    add("--egs.cmd", None, help="ignored")
    add("--trainer.input-model", None)
    add("--trainer.srand", 0, int)
    add("--trainer.num-epochs", 8.0, float)
    add("--trainer.samples-per-iter", 20000, int)
    add("--trainer.prior-subset-size", 20000, int)
    add("--trainer.num-jobs-compute-prior", 10, int)
    add("--trainer.optimization.num-jobs-initial", 1, int)
    add("--trainer.optimization.num-jobs-final", 8, int)
    add("--trainer.optimization.num-jobs-step", 1, int)
    add("--trainer.optimization.initial-effective-lrate", 0.0003, float)
    add("--trainer.optimization.final-effective-lrate", 0.00003, float)
    add("--trainer.optimization.momentum", 0.5, float)
    add("--trainer.optimization.shrink-value", 0.99, float)
    add("--trainer.optimization.shrink-saturation-threshold", 0.40, float)
    add("--trainer.optimization.proportional-shrink", 0.0, float)
    add("--trainer.optimization.max-models-combine", 20, int)
    add("--trainer.optimization.max-objective-evaluations", 30, int)
    add("--trainer.optimization.do-final-combination", True, _bool)
    add("--trainer.optimization.backstitch-training-scale", 0.0, float)
    add("--trainer.optimization.backstitch-training-interval", 1, int)
    add("--trainer.max-param-change", 2.0, float)
    add("--trainer.rnn.num-chunk-per-minibatch", "100")
    add("--trainer.deriv-truncate-margin", 8, int)
    add("--trainer.shuffle-buffer-size", 5000, int)
    add("--trainer.dropout-schedule", None)
    add("--trainer.add-option", None, action="append") if False else p.add_argument(
        "--trainer.add-option", dest="trainer_add_option", action="append", default=[])
    add("--trainer.lda.rand-prune", 4.0, float)
    add("--trainer.lda.max-lda-jobs", 10, int)
    add("--trainer.presoftmax-prior-scale-power", -0.25, float)
    add("--trainer.compute-per-dim-accuracy", False, _bool)
    add("--cleanup", True, _bool)
    add("--cleanup.remove-egs", True, _bool)
    add("--cleanup.preserve-model-interval", 100, int)
    add("--reporting.email", None)
    add("--reporting.interval", 0.1, float)
    add("--mpi.launcher", "mpiexec", help="MPI launcher (mpiexec path; srun works too, see the README)")
    add("--mpi.num-ranks", 1, int, "persistent ranks; 1 runs in-process")
    add("--mpi.backend", "mpi", help="how tensors move between ranks: mpi (mpi4py) or torch "
                                     "(torch.distributed: gloo on CPU, nccl on GPUs)")
    add("--num-threads", 1, int, "torch threads per rank")
    add_algorithm_options(p)
    return p


def uses_kaldi_jobs(args: argparse.Namespace) -> bool:
    """Kaldi's own iteration (independent jobs, then select/average) unless another algorithm or an
    explicit averaging period is asked for."""
    return args.averaging_algorithm == "ma" and args.averaging_period_frames is DEFAULT


@dataclass
class Params:
    args: argparse.Namespace
    dir: str
    model_left_context: int = 0
    model_right_context: int = 0
    num_pdfs: int = 0
    chunk_config: ChunkConfig | None = None
    min_deriv_time: int | None = None
    num_iters: int = 0
    num_archives: int = 0
    archives_to_process: int = 0
    device: str = "cpu"
    source: object = None
    ignored: list[str] = field(default_factory=list)
    dropout_schedule: list[DropoutSchedule] = field(default_factory=list)   # --trainer.dropout-schedule

    def num_jobs(self, it: int) -> int:
        a = self.args
        return sched.num_jobs(it, self.num_iters, a.trainer_optimization_num_jobs_initial,
                              a.trainer_optimization_num_jobs_final, a.trainer_optimization_num_jobs_step)

    def archives_processed(self, it: int) -> int:
        return sum(self.num_jobs(i) for i in range(it))

    def dropout(self, it: int) -> list[tuple[str, float]]:
        """(pattern, proportion) edits for iteration `it`, at the fraction of the data processed
        before it (train_rnn.py); none without --trainer.dropout-schedule."""
        if not self.dropout_schedule:
            return []
        return dropout_proportions(self.dropout_schedule, self.archives_processed(it) / self.archives_to_process)

    def lrate(self, it: int) -> float:
        a = self.args
        return sched.learning_rate(it, self.num_jobs(it), self.num_iters, self.archives_processed(it),
                                   self.archives_to_process, a.trainer_optimization_initial_effective_lrate,
                                   a.trainer_optimization_final_effective_lrate)


def get_params(args: argparse.Namespace) -> Params:
    for req in ("ali_dir", "dir", "feat_dir"):
        if not getattr(args, req):
            raise SystemExit(f"--{req.replace('_', '-')} is required")
    a = args
    if a.trainer_optimization_backstitch_training_scale and a.trainer_optimization_momentum:
        raise SystemExit("backstitch is incompatible with momentum (as in Kaldi)")
    if a.trainer_optimization_backstitch_training_scale:
        raise SystemExit("--trainer.optimization.backstitch-training-scale is not implemented by kaldi-avg")
    if a.trainer_input_model:
        raise SystemExit("--trainer.input-model is not implemented by kaldi-avg")
    try:
        dropout_schedule = parse_dropout_schedule(a.trainer_dropout_schedule) if a.trainer_dropout_schedule else []
    except DropoutScheduleError as e:
        raise SystemExit(str(e)) from None
    if not uses_kaldi_jobs(a):
        nj0, nj = a.trainer_optimization_num_jobs_initial, a.trainer_optimization_num_jobs_final
        if nj0 != nj:
            raise SystemExit(f"--averaging.algorithm={a.averaging_algorithm} (or an explicit --averaging.period-frames) "
                             f"trains a fixed number of workers: set --trainer.optimization.num-jobs-initial equal "
                             f"to --trainer.optimization.num-jobs-final (got {nj0} and {nj})")
        if nj % max(1, a.mpi_num_ranks):
            raise SystemExit(f"--trainer.optimization.num-jobs-final={nj} workers cannot be shared equally by "
                             f"--mpi.num-ranks={a.mpi_num_ranks} ranks")
    defaults = get_parser().parse_args([])
    ignored = [k for k in IGNORED if hasattr(a, k) and getattr(a, k) != getattr(defaults, k)]
    device = "cuda" if (a.use_gpu not in ("no", "false") and torch.cuda.is_available()) else "cpu"
    return Params(args=a, dir=a.dir, device=device, ignored=ignored, dropout_schedule=dropout_schedule)


# -- data -------------------------------------------------------------------------------
def build_source(args, trans_model) -> tuple[UtteranceSource, dict, str]:
    data = DataDir(args.feat_dir)
    feats = data.feats
    if feats is None:
        raise SystemExit(f"{args.feat_dir}/feats.scp is missing")
    cmvn = CmvnApplier(data, args.feat_cmvn_opts or "")
    lengths = {utt: data.num_frames(utt) for utt in feats}
    pdfs, report = match_alignments(lengths, read_alignments(args.ali_dir, trans_model))
    ivec = {}
    if args.feat_online_ivector_dir:
        d = args.feat_online_ivector_dir
        table = MatrixTable(os.path.join(d, "ivector_online.scp"))
        with open(os.path.join(d, "ivector_period")) as f:
            period = int(f.read().strip())
        first = next(iter(table))
        ivec = dict(load_ivector=table.__getitem__, ivector_dim=table[first].shape[1], ivector_period=period)
    feat_dim = feats[next(iter(feats))].shape[1]
    source = UtteranceSource(lengths={u: lengths[u] for u in pdfs}, load_features=lambda u: cmvn(u, feats[u]),
                             targets=pdfs, feat_dim=feat_dim, num_pdfs=trans_model.num_pdfs, **ivec)
    return source, pdfs, report.summary()


# -- setup stages ---------------------------------------------------------------------------
def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def setup_experiment(params: Params, trans_model, pdfs: dict, xconfig_text: str, xconfig_path: str) -> None:
    """Rank 0: configs/ + vars, lda.mat, 0.mdl, tree, phones.txt, cmvn_opts, num_jobs, srand."""
    a, d = params.args, params.dir
    os.makedirs(os.path.join(d, "log"), exist_ok=True)
    for name in ("tree", "phones.txt"):
        src = os.path.join(a.ali_dir, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(d, name))
    nj_src = os.path.join(a.ali_dir, "num_jobs")
    _write_text(os.path.join(d, "num_jobs"), (open(nj_src).read().strip() if os.path.exists(nj_src) else "1") + "\n")
    _write_text(os.path.join(d, "cmvn_opts"), (a.feat_cmvn_opts or "") + "\n")
    _write_text(os.path.join(d, "srand"), f"{a.trainer_srand}\n")
    configs = os.path.join(d, "configs")
    if a.stage <= -5 or not os.path.exists(os.path.join(configs, "final.config")) or a.stage <= -1:
        write_config_dir(xconfig_path, configs, {"NUM_PDFS": params.num_pdfs})
        _write_text(os.path.join(configs, "vars"), f"model_left_context={params.model_left_context}\n"
                                                   f"model_right_context={params.model_right_context}\n")
    counts = pdf_counts(pdfs, params.num_pdfs)
    _write_text(os.path.join(d, "pdf_counts"), "[ " + " ".join(str(int(c)) for c in counts) + " ]\n")
    lda_path = None
    if "fixed-affine-layer" in xconfig_text:
        lda_path = os.path.join(d, "lda.mat")
        if a.stage <= -3 or not os.path.exists(lda_path):
            t0 = time.time()
            _estimate_lda(params, pdfs, xconfig_text, xconfig_path, lda_path)
            write_simple_log(os.path.join(d, "log", "get_transform.log"), "kaldi-avg estimate LDA",
                             [f"wrote {lda_path}"], time.time() - t0)
        shutil.copyfile(lda_path, os.path.join(configs, "lda.mat"))
    if a.stage <= -1 or not os.path.exists(os.path.join(d, "0.mdl")):
        t0 = time.time()
        nnet = build_nnet(xconfig_text, xconfig_path, params.num_pdfs, lda_path, seed=a.trainer_srand)
        model = Nnet3Model(nnet, trans_model, alignment_priors(counts))
        model.write(os.path.join(d, "0.mdl"))
        write_simple_log(os.path.join(d, "log", "init_mdl.log"), "kaldi-avg init 0.mdl",
                         [f"{len(counts)} pdfs, priors from alignment counts"], time.time() - t0)


def _estimate_lda(params: Params, pdfs: dict, xconfig_text: str, xconfig_path: str, out_path: str) -> None:
    from .lda import LdaStats, estimate_transform
    init = build_nnet(xconfig_text, xconfig_path, params.num_pdfs, which="init")
    module = NnetModule(init).eval()
    src = params.source
    stats = None
    lc, rc = model_context(init)  # the init network's own context, not the full model's
    for utt in sorted(src.lengths)[:2000]:
        x = np.asarray(src.load_features(utt), np.float32)
        padded = np.concatenate([np.repeat(x[:1], lc, 0), x, np.repeat(x[-1:], rc, 0)])
        with torch.no_grad():
            y = module(torch.from_numpy(padded)[None], lc, len(x)).numpy()[0]
        if stats is None:
            stats = LdaStats(params.num_pdfs, y.shape[1])
        stats.accumulate(y, np.asarray(src.targets[utt][:len(x)]))
    m = estimate_transform(stats)
    w = KaldiWriter(binary=True)
    w.header()
    w.matrix(m)
    write_bytes(out_path, w.getvalue())


# -- the whole run ----------------------------------------------------------------------------
def _say(comm: Communicator, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [rank {comm.rank}] {msg}", file=sys.stderr, flush=True)


def _keep_model(params: Params, n: int, combine_iters: set[int]) -> bool:
    a = params.args
    return (n == 0 or n % a.cleanup_preserve_model_interval == 0 or n >= params.num_iters - 1
            or n in combine_iters or not a.cleanup)


def make_iterations(params: Params, comm: Communicator, am: Nnet3Model, source, plan, report: SkipReport):
    """KaldiJobs or AlgorithmWorkers (kaldi_avg.train.iterations), starting from `am`."""
    a = params.args
    if uses_kaldi_jobs(a):
        return KaldiJobs(params, comm, am.nnet, source, plan, report)
    n_local = a.trainer_optimization_num_jobs_final // comm.size
    return AlgorithmWorkers(params, comm, build_algorithm(a, comm, n_local), am.nnet, source, plan, report)


def run(rank: int, world_size: int, args: argparse.Namespace, comm: Communicator | None = None) -> int:
    comm = comm or LocalCommunicator()
    assert comm.rank == rank and comm.size == world_size, "rank/world size disagree with the communicator"
    torch.set_num_threads(max(1, args.num_threads))
    params = get_params(args)
    a, d = args, params.dir
    log_dir = os.path.join(d, "log")
    if rank == 0:
        os.makedirs(log_dir, exist_ok=True)
        flags = {a_.dest: a_.option_strings[0] for a_ in get_parser()._actions if a_.option_strings}
        for name in params.ignored:
            _say(comm, f"option {flags.get(name, name)} is accepted but ignored (kaldi-avg dumps no egs "
                       "and runs ranks under --mpi.launcher)")
    trans_model = read_transition_model(os.path.join(a.ali_dir, "final.mdl"))
    params.num_pdfs = trans_model.num_pdfs
    xconfig_path = os.path.join(d, "configs", "network.xconfig")
    with open(xconfig_path) as f:
        xconfig_text = f.read()
    params.model_left_context, params.model_right_context = xconfig_context(xconfig_text, xconfig_path,
                                                                            params.num_pdfs)
    params.chunk_config = ChunkConfig.from_egs_options(
        a.egs_chunk_width, model_left_context=params.model_left_context,
        model_right_context=params.model_right_context, chunk_left_context=a.egs_chunk_left_context,
        chunk_right_context=a.egs_chunk_right_context,
        chunk_left_context_initial=a.egs_chunk_left_context_initial,
        chunk_right_context_final=a.egs_chunk_right_context_final)
    if a.trainer_deriv_truncate_margin is not None and a.trainer_deriv_truncate_margin >= 0:
        params.min_deriv_time = -(a.trainer_deriv_truncate_margin + params.model_left_context)
    source, pdfs, match_summary = build_source(a, trans_model)
    params.source = source
    report = SkipReport()
    # Every rank screens the whole corpus; rank 0's report counts it once (the ranks' reports are summed).
    usable = screen_utterances(source, params.chunk_config, report=report if rank == 0 else SkipReport())
    # utt2uniq (speed perturbation) keeps every copy of a held-out utterance out of training, as get_egs.sh.
    plan = plan_archives(usable, samples_per_iter=a.trainer_samples_per_iter,
                         principal_chunk_width=params.chunk_config.principal_width, srand=a.trainer_srand,
                         utt2uniq=DataDir(a.feat_dir).utt2uniq)
    params.num_archives = plan.num_archives
    nj_init, nj_final = a.trainer_optimization_num_jobs_initial, a.trainer_optimization_num_jobs_final
    if nj_final > plan.num_archives:
        raise SystemExit(f"--trainer.optimization.num-jobs-final={nj_final} exceeds the number of archives "
                         f"({plan.num_archives}); lower it or --trainer.samples-per-iter")
    params.archives_to_process = sched.num_archives_to_process(a.trainer_num_epochs, plan.num_archives)
    params.num_iters = sched.num_iters(params.archives_to_process, nj_init, nj_final)
    combine_iters = sched.models_to_combine(params.num_iters, plan.num_archives,
                                            a.trainer_optimization_max_models_combine, nj_final)
    if rank == 0:
        _say(comm, f"alignments: {match_summary}; {len(usable)} usable utterances, {plan.num_archives} archives, "
                   f"{params.num_iters} iterations, model context {params.model_left_context}/"
                   f"{params.model_right_context}, {world_size} rank(s)")
        if a.stage < 0:
            setup_experiment(params, trans_model, pdfs, xconfig_text, xconfig_path)
    comm.barrier()

    valid = DiagnosticSet(source, plan.valid_utts, params.chunk_config, srand=a.trainer_srand, name="valid")
    train_diag = DiagnosticSet(source, plan.train_subset_utts, params.chunk_config, srand=a.trainer_srand,
                               name="train")
    start = max(a.stage, 0)
    if start > params.num_iters:
        start = params.num_iters
    mdl_path = os.path.join(d, f"{start}.mdl")
    if not os.path.exists(mdl_path):
        raise SystemExit(f"{mdl_path} does not exist: cannot start at stage {a.stage}")
    am = read_nnet3_file(mdl_path)
    iterations = make_iterations(params, comm, am, source, plan, report)
    if start > 0 and not uses_kaldi_jobs(a):
        state_path = _algo_state_path(d, start)
        if not os.path.exists(state_path):
            raise SystemExit(f"{state_path} does not exist: cannot resume {a.averaging_algorithm} at stage {start}")
        iterations.load_carry_state(torch.load(state_path, weights_only=False)[rank])
    if rank == 0:
        _say(comm, f"averaging: {iterations.describe()}")
    stop = params.num_iters if a.exit_stage is None else min(a.exit_stage, params.num_iters)
    for it in range(start, stop):
        t0 = time.time()
        if rank == 0:
            _diagnostics(params, iterations.module, valid, train_diag, str(it))
        info = iterations.run(it)
        carry = comm.allgather_object(iterations.carry_state())
        if rank == 0:
            _save_iteration(params, iterations.module, am, trans_model, xconfig_text, info, carry, combine_iters,
                            time.time() - t0)
            dropout = f" dropout {describe(info['dropout'])}" if info["dropout"] else ""
            _say(comm, f"iteration {it}/{params.num_iters}: jobs {info['num_jobs']} lrate {info['lrate']:.3g}"
                       f"{dropout} objf {max(info['objfs'].values()):.4f} ({time.time() - t0:.1f} s)")
        comm.barrier()
    if a.exit_stage is not None and a.exit_stage <= params.num_iters:
        return _finish_report(params, comm, report)

    # combination (rank 0) and priors (all ranks)
    final_path = os.path.join(d, f"{params.num_iters}.mdl")
    combined_path = os.path.join(d, "combined.mdl")
    if rank == 0:
        t0 = time.time()
        last = read_nnet3_file(final_path)
        if a.trainer_optimization_do_final_combination:
            combine_set = DiagnosticSet(source, plan.train_subset_utts, params.chunk_config, num_frames=60000,
                                        srand=a.trainer_srand, name="combine")
            iters = sorted(combine_iters, reverse=True)
            modules = [NnetModule(read_nnet3_file(os.path.join(d, f"{n}.mdl")).nnet) for n in iters]
            lines: list[str] = []
            best, result = combine(modules, combine_set, a.trainer_optimization_max_objective_evaluations,
                                   lines.append)
            best.write_back()
            combined = Nnet3Model(best.nnet, trans_model, last.priors)
            write_simple_log(os.path.join(log_dir, "combine.log"),
                             f"nnet3-combine (kaldi-avg) models {' '.join(f'{n}.mdl' for n in iters)}",
                             lines, time.time() - t0)
        else:
            combined = last
        combined.write(combined_path)
        _diagnostics(params, NnetModule(combined.nnet), valid, train_diag, "combined")
    comm.barrier()
    combined = read_nnet3_file(combined_path)
    cmodule = NnetModule(combined.nnet).to(params.device)
    njobs = min(a.trainer_num_jobs_compute_prior, plan.num_archives)
    post = np.zeros(params.num_pdfs)
    for k in range(rank, njobs, world_size):
        subset = DiagnosticSet(source, plan.archives[k], params.chunk_config,
                               num_frames=a.trainer_prior_subset_size * params.chunk_config.principal_width,
                               minibatch_size="1:128", srand=a.trainer_srand + k + 1, name=f"prior{k}")
        s, _ = posterior_sum(cmodule, subset)
        post += s
    post = comm.allreduce_sum_(torch.from_numpy(post)).numpy()
    if rank == 0:
        priors = adjust_priors(post)
        w = KaldiWriter(binary=True)
        w.header()
        w.vector(post.astype(np.float32))
        write_bytes(os.path.join(d, "post.combined.vec"), w.getvalue())
        Nnet3Model(combined.nnet, trans_model, priors).write(os.path.join(d, "final.mdl"))
        write_simple_log(os.path.join(log_dir, "adjust_priors.final.log"), "nnet3-am-adjust-priors (kaldi-avg)",
                         [f"priors from the average posterior over {njobs} subset(s)"], 0.0)
        write_accuracy_report(d)
        plot_progress(d)
    return _finish_report(params, comm, report)


def _algo_state_path(exp_dir: str, n: int) -> str:
    return os.path.join(exp_dir, f"{n}.algo.pt")


def _save_iteration(params: Params, module: NnetModule, am: Nnet3Model, trans_model, xconfig_text: str, info: dict,
                    carry: list, combine_iters: set[int], seconds: float) -> None:
    """Rank 0: (it+1).mdl, its algorithm state, checkpoint.pt, the iteration's logs; old models removed."""
    d, it = params.dir, info["iter"]
    log_dir = os.path.join(d, "log")
    module.write_back()
    model = Nnet3Model(module.nnet, trans_model, am.priors)
    model.write(os.path.join(d, f"{it + 1}.mdl"))
    if any(carry):
        buf = io.BytesIO()
        torch.save(carry, buf)
        write_bytes(_algo_state_path(d, it + 1), buf.getvalue())
    Checkpoint(model, xconfig_text, {"iter": it + 1, "archives_processed": params.archives_processed(it + 1),
                                     "num_iters": params.num_iters, "info": info, "algorithm": carry}).save(
        os.path.join(d, "checkpoint.pt"))
    kind = info["kind"]
    write_simple_log(os.path.join(log_dir, f"{kind}.{it}.log"), f"kaldi-avg {kind} iteration {it}",
                     [f"job {j + 1}: objective {o:g}, weight {info['weights'][j]:g}, "
                      f"data wait {info['wait'][j]:.3f} s" for j, o in sorted(info["objfs"].items())]
                     + [f"communication {info['comm_seconds']:.3f} s"]
                     + ([f"algorithm {info['algorithm']}"] if "algorithm" in info else [])
                     + ([f"dropout {describe(info['dropout'])}"] if info["dropout"] else []), seconds)
    with open(os.path.join(log_dir, "data_wait.log"), "a") as f:   # one line per iteration, for benchmarks
        f.write(f"iter {it}: jobs {info['num_jobs']} frames {sum(info['frames'].values()):.0f} "
                f"train-seconds {sum(info['seconds'].values()):.3f} "
                f"data-wait-seconds {sum(info['wait'].values()):.3f} max {max(info['wait'].values()):.3f} "
                f"communication-seconds {info['comm_seconds']:.3f} iteration-seconds {seconds:.3f}\n")
    old = it - 1
    if old >= 1 and not _keep_model(params, old, combine_iters):
        for path in (os.path.join(d, f"{old}.mdl"), _algo_state_path(d, old)):
            if os.path.exists(path):
                os.remove(path)


def _diagnostics(params: Params, module: NnetModule, valid, train, name: str) -> None:
    for kind, batches in (("valid", valid), ("train", train)):
        t0 = time.time()
        stats = compute_prob(module, batches)
        write_compute_prob_log(os.path.join(params.dir, "log", f"compute_prob_{kind}.{name}.log"), stats,
                               f"nnet3-compute-prob (kaldi-avg) {name}.mdl {kind}_diagnostic", time.time() - t0)


def _finish_report(params: Params, comm: Communicator, report: SkipReport) -> int:
    reports = comm.allgather_object(report.to_dict())
    if comm.rank == 0:
        merged = SkipReport.merged(SkipReport.from_dict(r) for r in reports)
        text = merged.summary()
        with open(os.path.join(params.dir, "log", "skipped.log"), "w") as f:
            f.write(text + "\n")
        for r, rd in enumerate(reports):
            _say(comm, f"rank {r} skipped: {SkipReport.from_dict(rd).total()} item(s)")
    comm.barrier()
    return 0
