"""The train_rnn.py / train_dnn.py / chain/train.py stage as persistent ranks (docs/kaldi-formats.md
6.2-6.12, docs/chain.md 9), in three phases:

    prepare(config, comm)   inputs read, archives and schedule planned, experiment set up (rank 0)
    train(prep, comm)       the iterations of `schedule.plan()` from --stage on: N.mdl, N.algo.pt, logs
    finish(prep, comm)      final combination, priors, final.mdl, reports
    run(rank, ws, args)     the three in turn (icefall's skeleton; `get_parser` is in train/options.py)

The experiment directory's file names come from `expdir.ExpDir`. chain/train.py differs in its
objective (`Prepared.objective`), its labels (supervisions instead of alignments), its own stages
before the LDA (kaldi_avg/chain/stages.py) and its end (final.mdl straight from the combination,
no priors); everything else is the one skeleton.

Every iteration writes `N.mdl` and, for algorithms with state that crosses iterations, `N.algo.pt`;
`--stage N` (N >= 0) resumes from them: everything else (archives, schedule, data order, seeds) is a
function of the options, so the result is the same.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import socket
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..atomic import copy_file, make_dirs, remove_stale_temporaries, writable_dir, write_bytes, write_text
from ..chain import stages as chain_stages
from ..data import (
    ChunkConfig,
    DiagnosticSet,
    NumFrames,
    OnlineIvectors,
    SkipReport,
    build_source,
    check_alignments,
    check_features,
    check_ivectors,
    check_minibatches,
    plan_archives,
    read_ivector_dir,
    screen_utterances,
)
from ..data.pdf_store import PdfStore
from ..kaldi.alignment import pdf_counts
from ..kaldi.binary import matrix_file, script_text_vector, vector_file
from ..kaldi.datadir import DataDir
from ..kaldi.nnet3.am import Nnet3Model, read_nnet3_file
from ..kaldi.nnet3.context import model_context
from ..kaldi.nnet3.nnet import Nnet
from ..kaldi.runlog import write_run_log
from ..kaldi.transition import TransitionModel, read_transition_model
from ..model.graph import NnetModule
from ..parallel import Communicator, LocalCommunicator
from . import schedule
from .combine import combine
from .config import ConfigError, RunConfig
from .diagnostics import plot_progress, write_accuracy_report, write_compute_prob_log
from .dropout import describe
from .expdir import ExpDir
from .host_memory import keep_freed_host_memory
from .iterations import IterationResult, JobData, make_iterations
from .lda import lda_transform
from .network import Network, check_chain_outputs, check_cross_entropy_outputs, find_network
from .objective import CROSS_ENTROPY, Objective
from .priors import adjust_priors, alignment_priors, subsets_posterior_sum
from .progress import progress_bar

# get_egs.sh's --num-train-frames-combine: the frames of the combination set
COMBINE_FRAMES = 60000
# The LDA statistics' frame budget: Kaldi accumulates every frame of max-lda-jobs archives; a
# full-rank scatter of a few hundred dims is estimated well long before, and start-up stays short.
LDA_MAX_FRAMES = 200_000


@dataclass
class Prepared:
    """Everything the loop and the final stages need, the same on every rank."""

    config: RunConfig
    trans_model: TransitionModel
    network: Network
    model_left_context: int
    model_right_context: int
    data: JobData
    iterations: list[schedule.Iteration]
    combine_iters: set[int]
    valid: DiagnosticSet
    train_subset: DiagnosticSet

    @property
    def exp(self) -> ExpDir:
        return ExpDir(self.config.dir)

    @property
    def objective(self) -> Objective:
        return self.data.objective

    @property
    def chain(self) -> bool:
        return self.config.chain is not None

    @property
    def num_pdfs(self) -> int:
        return self.trans_model.num_pdfs

    @property
    def num_iters(self) -> int:
        return len(self.iterations)


def say(comm: Communicator, msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [rank {comm.rank}] {msg}", file=sys.stderr, flush=True)


# -- prepare ----------------------------------------------------------------------------------
def online_ivectors(config: RunConfig, nnet: Nnet, path: str) -> tuple[OnlineIvectors, int] | None:
    """--feat.online-ivector-dir and the dim of the network's `ivector` input, which come together
    (nnet3 networks read i-vectors only through an input node named ivector)."""
    dim = nnet.input_dim("ivector")
    if dim < 0:
        if config.online_ivector_dir:
            raise ConfigError(f"--feat.online-ivector-dir={config.online_ivector_dir} is given but {path} has no "
                              "'ivector' input node")
        return None
    if not config.online_ivector_dir:
        raise ConfigError(f"{path}: the network has an 'ivector' input (dim {dim}): give --feat.online-ivector-dir")
    return read_ivector_dir(config.online_ivector_dir), dim


def prepare(config: RunConfig, comm: Communicator) -> Prepared:
    """Reads the inputs, plans archives and iterations (every rank), sets up the experiment (rank 0)."""
    if not os.path.isdir(config.feat_dir):
        raise ConfigError(f"{config.feat_dir}: no such directory (--feat-dir: the training data)")
    if not os.path.isfile(os.path.join(config.feat_dir, "feats.scp")):
        raise ConfigError(f"{config.feat_dir}/feats.scp is missing (--feat-dir: the training data's features)")
    chain = config.chain
    trans_model_path = os.path.join(config.ali_dir, "final.mdl")
    if not os.path.isfile(trans_model_path):
        raise ConfigError(f"{trans_model_path} is missing ({'--tree-dir' if chain else '--ali-dir'}: the transition "
                          "model)")
    network = find_network(config.dir, config.stage, config.input_model)
    trans_model = read_transition_model(trans_model_path)
    reference = network.reference(trans_model.num_pdfs)
    if chain:
        check_chain_outputs(reference, network.path, trans_model.num_pdfs, chain.training.xent_regularize)
    else:
        check_cross_entropy_outputs(reference, network.path, config.script)
    if reference.output_dim() != trans_model.num_pdfs:
        raise ConfigError(f"{network.path}: the output layer has dim {reference.output_dim()} but "
                          f"{trans_model_path} has {trans_model.num_pdfs} pdfs{network.output_dim_hint}")
    left, right = model_context(reference)
    ivectors = online_ivectors(config, reference, network.path)
    if comm.rank == 0:
        say(comm, f"network: {network.description}")
    c = config.egs
    f = chain.frame_subsampling_factor if chain else 1
    # chain egs carry f // 2 more frames each side, for the frame shifts (chain/train.py's egs_left_context)
    chunk_config = ChunkConfig.from_egs_options(
        c.width, model_left_context=left + f // 2, model_right_context=right + f // 2,
        chunk_left_context=c.left_context, chunk_right_context=c.right_context,
        chunk_left_context_initial=c.left_context_initial, chunk_right_context_final=c.right_context_final,
        frame_subsampling_factor=f)
    margin = config.min_deriv_time_margin
    min_deriv_time = None if margin is None else -(margin + left)
    max_deriv_time_relative = None if margin is None else margin + right
    report = load_ledger(config) if config.stage >= 0 else SkipReport()
    store = check_inputs(config, trans_model, reference.input_dim(), comm, ivectors)
    if chain:
        chain_stages.make_chain_files(config, trans_model, comm, lambda line: comm.rank == 0 and say(comm, line))
        source, match_summary = chain_stages.chain_corpus(config, trans_model, report, ivectors and ivectors[0])
        objective = chain_stages.chain_objective(config, trans_model.num_pdfs)
    else:
        source, match_summary = build_source(config.feat_dir, trans_model, report, cmvn_opts=config.cmvn_opts,
                                             alignments=store, ivectors=ivectors and ivectors[0])
        objective = CROSS_ENTROPY
    usable = screen_utterances(source, chunk_config, report=report)   # every rank: the ledger counts once
    # utt2uniq (speed perturbation) keeps every copy of a held-out utterance out of training, as get_egs.sh.
    srand = config.trainer.srand
    # chain/train.py's get_egs.sh: frames / frames-per-iter + 1 archives
    per_archive, width = ((config.trainer.frames_per_iter, 1) if chain else
                          (config.trainer.samples_per_iter, chunk_config.principal_width))
    archives = plan_archives(usable, samples_per_iter=per_archive, principal_chunk_width=width, srand=srand,
                             utt2uniq=DataDir(config.feat_dir).utt2uniq)
    nj_final = config.schedule.num_jobs_final
    jobs_limit = schedule.expanded_archives(config.schedule, archives.num_archives) if chain else archives.num_archives
    if nj_final > jobs_limit:
        raise ConfigError(f"--trainer.optimization.num-jobs-final={nj_final} exceeds the number of archives "
                          f"({archives.num_archives}{f' x {f} frame shifts' if chain else ''}); lower it or "
                          f"{'--trainer.frames-per-iter' if chain else '--trainer.samples-per-iter'}")
    if comm.rank == 0:
        check_minibatches([sum(usable[u] for u in archive) for archive in archives.archives],
                          chunk_config.principal_width, config.schedule.minibatch_size)
    iterations = schedule.plan(config.schedule, archives.num_archives)
    prep = Prepared(
        config, trans_model, network, left, right,
        JobData(source, archives, chunk_config, min_deriv_time, max_deriv_time_relative, report, objective), iterations,
        schedule.combine_iterations(config.schedule, iterations, archives.num_archives),
        DiagnosticSet(source, archives.valid_utts, chunk_config, srand=srand, name="valid", report=report),
        DiagnosticSet(source, archives.train_subset_utts, chunk_config, srand=srand, name="train", report=report))
    if comm.rank == 0:
        say(comm, f"{'supervisions' if chain else 'alignments'}: {match_summary}; {len(usable)} usable utterances, "
                  f"{archives.num_archives} archives, "
                  f"{prep.num_iters} iterations, model context {left}/{right}, {comm.size} rank(s)")
        if config.stage < 0:
            setup_experiment(prep)
    comm.barrier()
    return prep


def check_inputs(config: RunConfig, trans_model: TransitionModel, input_dim: int, comm: Communicator,
                 ivectors: tuple[OnlineIvectors, int] | None = None) -> PdfStore | None:
    """The start-up checks (kaldi_avg/data/checks.py), shared by the ranks so that each does its
    share of the corpus: every feats.scp (and cmvn.scp) entry by its header, against the
    network's input dim, and against utt2num_frames if there is one (a stale one stops the run;
    rank 0 writes it once if missing); the tree against the transition model; the alignments as
    one PdfStore that the ranks of a node share (every transition-id checked while it is built;
    rebuilt when the alignments change); the online
    i-vectors of every utterance (dim, and rows x period against its frames). Returns the store
    (chain: None; its tree dir is checked instead)."""
    data = DataDir(config.feat_dir)
    cmvn_scp = data.file("cmvn.scp")
    recorded = data.utt2num_frames
    check_features(data.file("feats.scp"), input_dim, cmvn_scp if os.path.exists(cmvn_scp) else None,
                   rank=comm.rank, world_size=comm.size,
                   num_frames=None if recorded is None else NumFrames(data.file("utt2num_frames"), recorded))
    if comm.rank == 0:
        data.lengths   # noqa: B018 - computes and writes utt2num_frames once, before every rank reads it
    if config.chain:   # the tree dir's alignments make the phone LM only; the lattices are checked at stage -3
        chain_stages.check_tree_dir(config)
        store = None
        comm.barrier()
    else:
        # ends in a barrier
        store = check_alignments(config.ali_dir, trans_model, ExpDir(config.dir).pdf_store, comm=comm)
    if ivectors is not None:
        check_ivectors(ivectors[0], ivectors[1], data.lengths, rank=comm.rank, world_size=comm.size)
    return store


def load_ledger(config: RunConfig) -> SkipReport:
    """The skip ledger of the run being resumed (what earlier iterations recorded), or an empty one."""
    path = ExpDir(config.dir).ledger
    if not os.path.exists(path):
        return SkipReport()
    with open(path) as f:
        return SkipReport.from_dict(json.load(f))


def gather_ledger(prep: Prepared, comm: Communicator) -> SkipReport | None:
    """Every rank's ledger merged (each item once), on rank 0; None elsewhere."""
    reports = comm.allgather_object(prep.data.report.to_dict())
    return SkipReport.merged(SkipReport.from_dict(r) for r in reports) if comm.rank == 0 else None


def setup_experiment(prep: Prepared) -> None:
    """Rank 0: configs/ + vars, lda.mat, presoftmax_prior_scale.vec, 0.mdl, tree, phones.txt, final.ie.id,
    cmvn_opts, num_jobs, srand, pdf_counts (chain: no presoftmax scale, no pdf_counts, 0.mdl without
    priors, frame_subsampling_factor)."""
    config, exp = prep.config, prep.exp
    os.makedirs(exp.log_dir, exist_ok=True)
    # chain: stage -5 copied the tree and phones.txt already (chain/stages.py)
    sources = [] if prep.chain else [os.path.join(config.ali_dir, name) for name in ("tree", "phones.txt")]
    if config.online_ivector_dir:   # decode.sh checks that decoding uses the same extractor
        sources.append(os.path.join(config.online_ivector_dir, "final.ie.id"))
    for src in sources:
        if os.path.exists(src):
            copy_file(src, exp.copied(src))
    nj_src = os.path.join(config.ali_dir, "num_jobs")
    num_jobs = open(nj_src).read().strip() if os.path.exists(nj_src) else "1"
    write_text(exp.num_jobs, num_jobs + "\n")
    write_text(exp.cmvn_opts, config.cmvn_opts + "\n")
    write_text(exp.srand, f"{config.trainer.srand}\n")
    prep.network.write_files(config.dir, config.stage, prep.num_pdfs,
                             (prep.model_left_context, prep.model_right_context))
    counts = None
    if not prep.chain:   # counts over the utterances that train (as ali-to-pdf | analyze-counts)
        src = prep.data.source
        counts = pdf_counts({u: src.targets[u] for u in src.lengths}, prep.num_pdfs)
        write_text(exp.pdf_counts, script_text_vector(str(int(c)) for c in counts))
    lda_path = None
    lda_init = prep.network.lda_init_network(prep.num_pdfs)
    if lda_init is not None:
        lda_path = exp.lda
        if config.stage <= -3 or not os.path.exists(lda_path):
            t0 = time.time()
            write_bytes(lda_path, matrix_file(lda_transform(lda_init, lda_chunks(prep, lda_init), prep.num_pdfs,
                                                            prep.objective)))
            write_run_log(exp.log("get_transform.log"), "kaldi-avg estimate LDA", [f"wrote {lda_path}"],
                          time.time() - t0)
        copy_file(lda_path, exp.config_copy(exp.lda))
    if counts is not None and (config.stage <= -2 or not os.path.exists(exp.presoftmax_prior_scale)):
        write_presoftmax_prior_scale(exp, counts, config.trainer.presoftmax_prior_scale_power)
    if config.stage <= -1 or not os.path.exists(exp.model(0)):
        t0 = time.time()
        nnet = prep.network.initial_network(prep.num_pdfs, lda_path, config.trainer.srand)
        priors = None if counts is None else alignment_priors(counts)
        Nnet3Model(nnet, prep.trans_model, priors).write(exp.model(0))
        write_run_log(exp.log("init_mdl.log"), "kaldi-avg init 0.mdl",
                      [f"{prep.num_pdfs} pdfs, " + ("no priors (a chain model)" if counts is None else
                                                    "priors from alignment counts")], time.time() - t0)
    if prep.chain:
        write_text(exp.frame_subsampling_factor, f"{config.chain.frame_subsampling_factor}\n")


def lda_chunks(prep: Prepared, init: Nnet) -> DiagnosticSet:
    """What the LDA statistics accumulate over (stage -3, nnet3-acc-lda-stats): the chunks of the
    first max-lda-jobs archives, as the egs Kaldi reads (a random LDA_MAX_FRAMES of them), each with
    its i-vector. Their context is the init network's own: with an output delay it needs more
    left context than the whole model (edges repeat the first and last frames)."""
    data, config = prep.data, prep.config
    left, right = model_context(init)
    f = data.chunk_config.frame_subsampling_factor
    chunk_config = ChunkConfig(data.chunk_config.widths, left, right, frame_subsampling_factor=f)
    utterances = [u for archive in data.archives.archives[:config.trainer.max_lda_jobs] for u in archive]
    return DiagnosticSet(data.source, utterances, chunk_config, num_frames=LDA_MAX_FRAMES,
                         minibatch_size="1:256", srand=config.trainer.srand, name="lda", report=data.report)


def write_presoftmax_prior_scale(exp: ExpDir, counts: np.ndarray, power: float) -> None:
    """Stage -2: presoftmax_prior_scale.vec, (count + 0.01 x average count)^power rescaled to average 1,
    and configs/presoftmax_prior_scale.vec -> ../presoftmax_prior_scale.vec, as Kaldi's
    compute_presoftmax_prior_scale (for configs with a FixedScaleComponent reading it)."""
    scales = (counts + 0.01 * counts.mean()) ** power
    scales *= len(scales) / scales.sum()
    write_text(exp.presoftmax_prior_scale, script_text_vector(repr(float(x)) for x in scales))
    link = exp.config_copy(exp.presoftmax_prior_scale)
    make_dirs(exp.configs)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.join("..", os.path.basename(exp.presoftmax_prior_scale)), link)


# -- the iterations ---------------------------------------------------------------------------
def train(prep: Prepared, comm: Communicator) -> None:
    """The iterations from --stage (or 0) to --exit-stage (or the end), every rank."""
    config, exp = prep.config, prep.exp
    start = min(max(config.stage, 0), prep.num_iters)
    mdl_path = exp.model(start)
    if not os.path.exists(mdl_path):
        raise ConfigError(f"{mdl_path} does not exist: cannot start at stage {config.stage}")
    am = read_nnet3_file(mdl_path)
    iterations = make_iterations(config, comm, prep.data, am.nnet)
    if start > 0 and not config.averaging.kaldi_jobs:
        state_path = exp.algo_state(start)
        if not os.path.exists(state_path):
            raise ConfigError(f"{state_path} does not exist: cannot resume {config.averaging.algorithm} "
                              f"at stage {start}")
        iterations.load_carry_state(torch.load(state_path, weights_only=False)[comm.rank])
    if comm.rank == 0:
        say(comm, f"averaging: {iterations.describe()}")
    stop = prep.num_iters if config.exit_stage is None else min(config.exit_stage, prep.num_iters)
    for it in prep.iterations[start:stop]:
        t0 = time.time()
        diagnostics = diagnostic_kinds(prep, comm, num_jobs=it.num_jobs)
        if diagnostics:
            run_diagnostics(prep, iterations.module, it.index, diagnostics)
        result = iterations.run(it)
        carry = comm.allgather_object(iterations.carry_state())
        ledger = gather_ledger(prep, comm)
        if comm.rank == 0:
            write_text(exp.ledger, json.dumps(ledger.to_dict()))
            save_iteration(prep, iterations.module, am, result, carry, time.time() - t0)
            dropout = f" dropout {describe(list(it.dropout))}" if it.dropout else ""
            say(comm, f"iteration {it.index}/{prep.num_iters}: jobs {it.num_jobs} lrate {it.learning_rate:.3g}"
                      f"{dropout} objf {result.best_objf:.4f} ({time.time() - t0:.1f} s)")
        comm.barrier()


def save_iteration(prep: Prepared, module: NnetModule, am: Nnet3Model, result: IterationResult, carry: list,
                   seconds: float) -> None:
    """Rank 0: the algorithm state for iteration it+1, then (it+1).mdl (so that an N.mdl is always
    resumable: the launcher's resume hint is the last N.mdl), the iteration's logs; old models removed."""
    exp, it = prep.exp, result.iteration
    if any(carry):
        buf = io.BytesIO()
        torch.save(carry, buf)
        write_bytes(exp.algo_state(it.index + 1), buf.getvalue())
    module.write_back()
    Nnet3Model(module.nnet, prep.trans_model, am.priors).write(exp.model(it.index + 1))
    write_run_log(exp.log(f"{result.kind}.{it.index}.log"), f"kaldi-avg {result.kind} iteration {it.index}",
                  [f"job {j.job + 1}: objective {j.objf:g}, weight {result.weights[j.job]:g}, "
                   f"data wait {j.data_wait:.3f} s" for j in result.jobs]
                  + [f"communication {result.comm_seconds:.3f} s"]
                  + ([f"algorithm {result.algorithm}"] if result.algorithm else [])
                  + ([f"dropout {describe(list(it.dropout))}"] if it.dropout else []), seconds)
    _append_data_wait(exp.data_wait_log, result, seconds)
    old = it.index - 1
    if old >= 1 and not keep_model(prep, old):
        for path in (exp.model(old), exp.algo_state(old)):
            if os.path.exists(path):
                os.remove(path)


def _append_data_wait(path: str, result: IterationResult, seconds: float) -> None:
    """log/data_wait.log: one line per iteration, for benchmarks; a resumed run replaces the lines
    of the iterations it trains again."""
    it = result.iteration.index
    kept = []
    if os.path.exists(path):
        with open(path) as f:
            kept = [line for line in f if int(line.split()[1].rstrip(":")) < it]
    jobs = result.jobs
    kept.append(f"iter {it}: jobs {result.iteration.num_jobs} frames {sum(j.frames for j in jobs):.0f} "
                f"train-seconds {sum(j.seconds for j in jobs):.3f} "
                f"data-wait-seconds {sum(j.data_wait for j in jobs):.3f} max {max(j.data_wait for j in jobs):.3f} "
                f"communication-seconds {result.comm_seconds:.3f} iteration-seconds {seconds:.3f} "
                f"objective-seconds {result.objective_seconds:.3f}\n")
    write_text(path, "".join(kept))


def keep_model(prep: Prepared, n: int) -> bool:
    c = prep.config
    return (n == 0 or n % c.preserve_model_interval == 0 or n >= prep.num_iters - 1
            or n in prep.combine_iters or not c.cleanup)


def diagnostic_kinds(prep: Prepared, comm: Communicator, same_model: bool = False,
                     num_jobs: int | None = None) -> tuple[str, ...]:
    """The compute_prob diagnostics this rank computes: where every rank holds the same model
    (`same_model`; at the start of an iteration of Kaldi's jobs, averaged or selected, statistics
    included) the first rank computes the valid one and the last the train one, side by side
    (Kaldi runs them in the background), or, when the iteration's `num_jobs` leave ranks without a
    job (jobs go round robin from rank 0), the first and last of those, beside the jobs; else
    rank 0 computes both."""
    kinds = ("valid", "train")
    if not (same_model or prep.config.averaging.kaldi_jobs):
        ranks = (0, 0)
    elif num_jobs is not None and num_jobs < comm.size:
        ranks = (num_jobs, comm.size - 1)
    else:
        ranks = (0, comm.size - 1)
    return tuple(kind for kind, rank in zip(kinds, ranks) if rank == comm.rank)


def run_diagnostics(prep: Prepared, module: NnetModule, name: int | str,
                    kinds: tuple[str, ...] = ("valid", "train")) -> None:
    objective = prep.objective
    for kind, batches in (("valid", prep.valid), ("train", prep.train_subset)):
        if kind not in kinds:
            continue
        t0 = time.time()
        stats = objective.compute_prob(module, batches)
        write_compute_prob_log(prep.exp.compute_prob_log(kind, name), stats,
                               f"{objective.prob_program} (kaldi-avg) {name}.mdl {kind}_diagnostic", time.time() - t0,
                               objective)


# -- finish -----------------------------------------------------------------------------------
def finish(prep: Prepared, comm: Communicator) -> None:
    """combined.mdl (all ranks, rank 0 writes it), the average posterior over the prior subsets (all ranks), final.mdl;
    rank 0 says what each step does and how long it took (they take a while after the last iteration).
    A chain model has no priors: nnet3-chain-combine's output is final.mdl. progress.png (only the
    iterations' diagnostics) is drawn first by the last of several ranks, whose share of the
    combination's evaluations is the smallest, else by rank 0 at the end."""
    t0 = time.time()
    plotter = comm.size - 1
    if comm.size > 1 and comm.rank == plotter:
        plot_reports(prep)
    combined = combine_models(prep, comm)
    comm.barrier()
    if prep.chain:
        if comm.rank == 0:
            write_reports(prep, plot=plotter == 0)
            say(comm, f"wrote {prep.exp.model('final')} ({time.time() - t0:.1f} s after the last iteration)")
        return
    if comm.rank == 0:
        say(comm, f"priors: the combined model's average posterior over the prior subsets, on {comm.size} rank(s)")
    post, njobs = average_posterior(prep, comm, combined)
    if comm.rank == 0:
        write_final_model(prep, combined, post, njobs, plot=plotter == 0)
        say(comm, f"wrote {prep.exp.model('final')} ({time.time() - t0:.1f} s after the last iteration)")


def combine_models(prep: Prepared, comm: Communicator) -> Nnet3Model:
    """nnet3-combine (nnet3-chain-combine) of the last models (or the last model alone), on every
    rank: the objective evaluations are shared by the ranks and every rank gets the combined model;
    rank 0 writes it as combined.mdl (chain: final.mdl) with log/combine.log; its diagnostics are
    shared as the iterations' are."""
    config, exp = prep.config, prep.exp
    program = "nnet3-chain-combine" if prep.chain else "nnet3-combine"
    name = "final" if prep.chain else "combined"
    t0 = time.time()
    last = read_nnet3_file(exp.model(prep.num_iters))
    combined = last
    if config.trainer.do_final_combination:
        if comm.rank == 0:
            say(comm, f"combining the models of iterations {min(prep.combine_iters)}..{max(prep.combine_iters)} "
                      f"({program}, at most {config.trainer.max_objective_evaluations} evaluations on {comm.size} "
                      "rank(s); log/combine.log)")
        combine_set = DiagnosticSet(prep.data.source, prep.data.archives.train_subset_utts, prep.data.chunk_config,
                                    num_frames=COMBINE_FRAMES, srand=config.trainer.srand, name="combine",
                                    report=prep.data.report)
        iters = sorted(prep.combine_iters, reverse=True)
        modules = [NnetModule(read_nnet3_file(exp.model(n)).nnet) for n in iters]
        lines: list[str] = []
        best, _ = combine(modules, combine_set, config.trainer.max_objective_evaluations, lines.append,
                          progress=progress_bar("combining", "evaluations") if comm.rank == 0 else None,
                          objective=prep.objective, comm=comm)
        best.write_back()
        combined = Nnet3Model(best.nnet, prep.trans_model, last.priors)
        models = " ".join(f"{n}.mdl" for n in iters)
        if comm.rank == 0:
            write_run_log(exp.log("combine.log"), f"{program} (kaldi-avg) models {models}", lines, time.time() - t0)
    if comm.rank == 0:
        combined.write(exp.model(name))
    kinds = diagnostic_kinds(prep, comm, same_model=True)
    if kinds:
        run_diagnostics(prep, NnetModule(combined.nnet), name, kinds)
    return combined


def average_posterior(prep: Prepared, comm: Communicator, combined: Nnet3Model) -> tuple[np.ndarray, int]:
    """Σ of the combined model's posteriors over the prior subsets, each subset's minibatches shared by
    the ranks (the sum one rank computes)."""
    config, data = prep.config, prep.data
    module = NnetModule(combined.nnet).to(config.device)
    njobs = min(config.trainer.num_jobs_compute_prior, data.archives.num_archives)
    post = subsets_posterior_sum(module, data, range(njobs), config.trainer.prior_subset_size, config.trainer.srand,
                                 progress_bar("priors", "subsets") if comm.rank == 0 else None, comm=comm)
    return post, njobs


def write_final_model(prep: Prepared, combined: Nnet3Model, post: np.ndarray, njobs: int, plot: bool = True) -> None:
    exp = prep.exp
    write_bytes(exp.post_combined, vector_file(post.astype(np.float32)))
    Nnet3Model(combined.nnet, prep.trans_model, adjust_priors(post)).write(exp.model("final"))
    write_run_log(exp.log("adjust_priors.final.log"), "nnet3-am-adjust-priors (kaldi-avg)",
                  [f"priors from the average posterior over {njobs} subset(s)"], 0.0)
    write_reports(prep, plot)


def write_reports(prep: Prepared, plot: bool = True) -> None:
    """accuracy.report (chain: of the log-probability) and, if `plot`, progress.png."""
    write_accuracy_report(prep.exp, prep.objective.report_key)
    if plot:
        plot_reports(prep)


def plot_reports(prep: Prepared) -> None:
    """progress.png: the iterations' train and valid diagnostics (accuracy and log-likelihood;
    chain: log-probability)."""
    key = prep.objective.report_key
    plot_progress(prep.exp, ("log-likelihood", "accuracy") if key == "accuracy" else (key,))


# -- the whole run ----------------------------------------------------------------------------
def run(rank: int, world_size: int, args: argparse.Namespace, comm: Communicator | None = None,
        local_rank: int | None = None) -> int:
    """One rank's run; `local_rank`: its index on its node (the GPU it takes), default `rank`."""
    comm = comm or LocalCommunicator()
    if comm.rank != rank or comm.size != world_size:
        raise ValueError(f"rank {rank}/{world_size} disagrees with the communicator ({comm.rank}/{comm.size})")
    config = RunConfig.from_args(args)
    config.check_world(world_size)
    torch.set_num_threads(max(1, config.launch.num_threads))
    if config.device == "cuda":   # one GPU per rank of a node, as Kaldi's exclusive-mode jobs
        torch.cuda.set_device((rank if local_rank is None else local_rank) % torch.cuda.device_count())
    say(comm, f"rank {rank} of {world_size} on {socket.gethostname()}, device {config.device}")
    exp = ExpDir(config.dir)
    if rank == 0:
        try:
            os.makedirs(exp.log_dir, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"--dir {config.dir}: cannot create its log directory: {e.strerror}") from None
        writable_dir(exp.log_dir)   # a read-only --dir: one line now, not a traceback at its first write
        remove_stale_temporaries(config.dir)
        for flag, reason in config.ignored:
            say(comm, f"option {flag} is accepted but ignored: {reason}")
    prep = prepare(config, comm)
    keep_freed_host_memory()   # for the minibatches; start-up's one-off buffers have gone back
    train(prep, comm)
    if config.exit_stage is None or config.exit_stage > prep.num_iters:
        finish(prep, comm)
    return finish_report(prep, comm)


def finish_report(prep: Prepared, comm: Communicator) -> int:
    """log/skipped.log and skipped.json: every item left out, once, with its reason; one console line."""
    ledger = gather_ledger(prep, comm)
    if comm.rank == 0:
        write_text(prep.exp.ledger, json.dumps(ledger.to_dict()))
        write_text(prep.exp.skipped_log, ledger.summary() + "\n")
        say(comm, ledger.one_line() + " (log/skipped.log)")
    comm.barrier()
    return 0
