"""The command lines of steps/kaldi_avg/train_rnn.py, train_dnn.py and chain/train.py: every option
of Kaldi's scripts (kaldi-asr/kaldi f40076610), with their meanings and defaults
(docs/kaldi-formats.md 6.1, docs/chain.md 9), plus `--mpi.*` and `--averaging.*`.

Every option is one `Opt` row: `COMMON` rows are every script's (Kaldi's CommonParser), `XENT` rows
the cross-entropy scripts', `RNN`, `DNN` and `CHAIN` rows one script's own (a script's row replaces
the `COMMON` row of the same flag: where Kaldi's defaults or meanings differ). An option that means
nothing without egs carries the reason it is ignored, and the driver reports the ignored options a
user set. `SCRIPTS` names the scripts; `RunConfig.from_args` (kaldi_avg/train/config.py) turns the
parsed options into the typed configuration.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..options import KaldiArgumentParser, kaldi_bool
from ..parallel import add_algorithm_options

NO_EGS = "kaldi-avg reads features and alignments directly and dumps no egs"


@dataclass(frozen=True)
class Opt:
    flag: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    ignored: str | None = None      # why kaldi-avg accepts the option but does not use it
    aliases: tuple[str, ...] = ()   # other flags Kaldi accepts for the same option

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace(".", "_").replace("-", "_")


COMMON = (
    Opt("--stage", -4, "stage to start at: -4 from the beginning (-5 also remakes init.raw from "
        "configs/init.config, -3 LDA, -2 the presoftmax prior scale, -1 the initial model), N >= 0 resumes "
        "from N.mdl", int),
    Opt("--exit-stage", None, "stop before this iteration (the models up to it are kept)", int),
    Opt("--cmd", "run.pl", "how Kaldi launches jobs (run.pl, queue.pl, slurm.pl); see --mpi.launcher"),
    Opt("--use-gpu", "yes", "yes, wait or no (true/false as yes/no): train on CUDA when a GPU is visible "
        "(yes/wait), on CPU with no"),
    Opt("--feat-dir", None, "data directory with feats.scp (and cmvn.scp, utt2spk) to train on"),
    Opt("--dir", None, "the experiment directory; configs/network.xconfig, else Kaldi's configs/final.config "
        "(or make_configs.py's configs/layer*.config) defines the network"),
    Opt("--feat.cmvn-opts", "", "options of apply-cmvn applied to the features, e.g. "
        "'--norm-means=true --norm-vars=false'"),
    Opt("--feat.online-ivector-dir", None, "directory with ivector_online.scp and ivector_period (the "
        "online i-vectors of the network's 'ivector' input)"),
    Opt("--egs.dir", None, "a directory of dumped egs", ignored=NO_EGS),
    Opt("--egs.stage", 0, "stage of get_egs.sh", int, ignored=NO_EGS),
    Opt("--egs.opts", None, "extra options of get_egs.sh", ignored=NO_EGS),
    Opt("--egs.cmd", None, "how get_egs.sh jobs are launched", ignored=NO_EGS),
    Opt("--trainer.input-model", None, "start from this raw nnet3 network (used as 0.raw) instead of configs/"),
    Opt("--trainer.srand", 0, "random seed of data order, initialization and dropout", int),
    Opt("--trainer.num-epochs", 8.0, "passes over the training data", float),
    Opt("--trainer.optimization.num-jobs-initial", 1, "parallel jobs at the first iteration", int),
    Opt("--trainer.optimization.num-jobs-final", 8, "parallel jobs at the last iteration (the job count "
        "ramps linearly); kaldi-avg runs this many ranks by default", int),
    Opt("--trainer.optimization.num-jobs-step", 1, "above this, job counts are multiples of it", int),
    Opt("--trainer.optimization.initial-effective-lrate", 0.0003, "effective learning rate at the start; "
        "each job trains with num-jobs x the effective rate", float),
    Opt("--trainer.optimization.final-effective-lrate", 0.00003, "effective learning rate at the end "
        "(geometric decay by data processed)", float),
    Opt("--trainer.optimization.proportional-shrink", 0.0, "shrink by 1 - this x learning rate every "
        "iteration (an l2 alternative)", float),
    Opt("--trainer.optimization.max-models-combine", 20, "models of the last iterations that enter "
        "the final combination", int, aliases=("--trainer.max-models-combine",)),
    Opt("--trainer.optimization.max-objective-evaluations", 30, "objective evaluations of the final "
        "combination's search", int, aliases=("--trainer.max-objective-evaluations",)),
    Opt("--trainer.optimization.do-final-combination", True, "combine the last models into "
        "combined.mdl (else the last model is used)", kaldi_bool),
    Opt("--trainer.optimization.combine-sum-to-one-penalty", 0.0, "penalty of the old combination",
        float, ignored="Kaldi's scripts no longer use it either"),
    Opt("--trainer.optimization.backstitch-training-scale", 0.0, "backstitch training scale "
        "(not implemented: must stay 0)", float),
    Opt("--trainer.optimization.backstitch-training-interval", 1, "backstitch every this many "
        "minibatches", int),
    Opt("--trainer.max-param-change", 2.0, "largest parameter change per minibatch (halved by sqrt 2 at "
        "iteration 0)", float),
    Opt("--trainer.shuffle-buffer-size", 5000, "egs shuffled together when reading an archive", int),
    Opt("--trainer.dropout-schedule", None, "dropout proportion over the data processed, e.g. "
        "'0,0@0.20,0.3@0.50,0' (Kaldi's syntax)"),
    Opt("--trainer.add-option", None, "extra option passed to nnet3-train",
        ignored="kaldi-avg runs no nnet3-train"),
    Opt("--trainer.lda.rand-prune", 4.0, "randomized pruning of the LDA statistics", float,
        ignored="the LDA statistics are accumulated exactly"),
    Opt("--trainer.lda.max-lda-jobs", 10, "archives the LDA statistics are accumulated over", int),
    Opt("--trainer.compute-per-dim-accuracy", False, "write per-dimension accuracies", kaldi_bool,
        ignored="not written"),
    Opt("--cleanup", True, "remove the models that are no longer needed", kaldi_bool),
    Opt("--cleanup.remove-egs", True, "remove the egs at the end", kaldi_bool, ignored=NO_EGS),
    Opt("--cleanup.preserve-model-interval", 100, "keep every N-th model when cleaning up", int),
    Opt("--reporting.email", None, "mail progress reports here", ignored="no mail is sent"),
    Opt("--reporting.interval", 0.1, "fraction of the iterations between reports", float,
        ignored="no mail is sent"),
    Opt("--mpi.launcher", "auto", "how the persistent ranks are started: an MPI launcher command with its "
        "arguments ('mpiexec', 'mpirun --hostfile h', 'srun --mpi=pmix'; the first word is looked up on "
        "PATH), or cmd (one array job of --cmd: run.pl, queue.pl, slurm.pl; ranks meet through a file in "
        "--dir). auto: cmd when --cmd is a cluster script (queue.pl, slurm.pl, ssh.pl), else mpiexec, "
        "else cmd"),
    Opt("--mpi.num-ranks", None, "persistent ranks; 1 trains in this process. Default: num-jobs-final, "
        "capped on one machine by its GPUs (--use-gpu yes/wait) or CPU cores / --num-threads", int),
    Opt("--mpi.hostfile", None, "hosts for the MPI launcher (given to it as its hostfile option)"),
    Opt("--mpi.job", None, "set by --mpi.launcher=cmd on each rank: the array job's 1-based index", int),
    Opt("--mpi.rendezvous", None, "set by --mpi.launcher=cmd on each rank: the file through which the "
        "ranks meet"),
    Opt("--mpi.launcher-heartbeat", None, "set by train_rnn.py/train_dnn.py on each rank it starts: a file it "
        "touches every second; a rank exits when the file stops changing for 10 s (its launcher is gone)"),
    Opt("--mpi.backend", None, "how tensors move between ranks: mpi (mpi4py) or torch "
        "(torch.distributed: gloo on CPU, nccl on GPUs); default: mpi under an MPI launcher, torch for "
        "--mpi.launcher=cmd and torchrun"),
    Opt("--num-threads", 1, "torch threads per rank", int),
    Opt("--verbose", 0, "verbosity: above 0, errors in the options or data also print their traceback", int),
)

XENT = (
    Opt("--ali-dir", None, "alignment directory: ali.*.gz, final.mdl (the transition model), tree"),
    Opt("--lang", None, "the lang directory", ignored="Kaldi's script does not use it either"),
    Opt("--trainer.prior-subset-size", 20000, "egs per job used to estimate the priors", int),
    Opt("--trainer.num-jobs-compute-prior", 10, "jobs (archives) the priors are estimated over", int),
    Opt("--trainer.presoftmax-prior-scale-power", -0.25, "power of the presoftmax prior scale "
        "(presoftmax_prior_scale.vec, for configs that read it)", float),
)

def chunk_options(width_help: str, left_context: int) -> tuple[Opt, ...]:
    """--egs.chunk-*: train_rnn.py's and chain/train.py's rows, which differ in the width's meaning and the
    left context's default (40 and 0)."""
    return (
        Opt("--egs.chunk-width", "20", width_help + "; a comma list gives alternatives, the first is the "
            "principal width"),
        Opt("--egs.chunk-left-context", left_context, "extra frames of left context per chunk (to warm up "
            "the recurrence), added to the model's left context", int),
        Opt("--egs.chunk-right-context", 0, "extra frames of right context per chunk (BLSTMs)", int),
        Opt("--egs.chunk-left-context-initial", -1, "left context of the first chunk of an utterance "
            "(-1: the same as --egs.chunk-left-context)", int),
        Opt("--egs.chunk-right-context-final", -1, "right context of the last chunk of an utterance "
            "(-1: the same as --egs.chunk-right-context)", int),
    )


RNN = (
    *chunk_options("frames per chunk (BPTT length)", 40),
    Opt("--trainer.samples-per-iter", 20000, "chunks per archive (one job's data for one iteration)", int),
    Opt("--trainer.optimization.momentum", 0.5, "momentum of nnet3-train's update", float),
    Opt("--trainer.optimization.shrink-value", 0.99, "parameter scale applied at iteration 0 and when the "
        "sigmoid/tanh units saturate", float),
    Opt("--trainer.optimization.shrink-saturation-threshold", 0.40, "saturation above which "
        "--trainer.optimization.shrink-value is applied", float),
    Opt("--trainer.rnn.num-chunk-per-minibatch", "100", "chunks per minibatch (a Kaldi minibatch rule "
        "such as 128,64; iteration 0 halves it)"),
    Opt("--trainer.deriv-truncate-margin", 8, "backpropagate through at most this many frames of the "
        "left context (negative: no truncation)", int),
)

DNN = (
    Opt("--egs.frames-per-eg", 8, "output frames per eg; each iteration's job trains on one of them, "
        "a different one each pass over the archives", int),
    Opt("--trainer.samples-per-iter", 400000, "egs per archive (one job's data for one iteration)", int),
    Opt("--trainer.optimization.momentum", 0.0, "momentum of nnet3-train's update", float),
    Opt("--trainer.optimization.minibatch-size", "512", "egs per minibatch (a Kaldi minibatch rule such as "
        "256,128; iteration 0 halves it)"),
)

CHAIN = (
    Opt("--stage", -4, "stage to start at: -6 the phone LM, -5 den.fst and normalization.fst (both are made "
        "whenever missing), -4 init.raw from configs/init.config, -3 the supervisions, -2 LDA, -1 the initial "
        "model; N >= 0 resumes from N.mdl", int),
    Opt("--tree-dir", None, "tree directory: tree, final.mdl (its transition model has the chain topology), "
        "ali.*.gz (the phone LM's phone sequences), phones.txt"),
    Opt("--lat-dir", None, "lattice directory: lat.*.gz (the numerator lattices, as align_fmllr_lats.sh writes "
        "them), final.mdl (their transition model)"),
    *chunk_options("input frames per chunk, rounded up to multiples of the frame-subsampling factor", 0),
    Opt("--egs.nj", 0, "jobs of get_egs.sh", int, ignored=NO_EGS),
    Opt("--chain.lm-opts", None, "options of chain-est-phone-lm, e.g. '--num-extra-lm-states=2000'"),
    Opt("--chain.l2-regularize", 0.0, "l2 regularization of the chain output", float),
    Opt("--chain.xent-regularize", 0.0, "weight of the cross-entropy output 'output-xent' (the network "
        "must have it)", float),
    Opt("--chain.right-tolerance", 5, "frames a phone may end later than in the lattice", int),
    Opt("--chain.left-tolerance", 5, "frames a phone may start earlier than in the lattice", int),
    Opt("--chain.leaky-hmm-coefficient", 0.00001, "leaky-HMM coefficient of the denominator", float),
    Opt("--chain.apply-deriv-weights", True, "multiply the derivatives by the chunks' frame weights", kaldi_bool),
    Opt("--chain.frame-subsampling-factor", 3, "input frames per output frame of the chain model", int),
    Opt("--chain.alignment-subsampling-factor", 3, "lattice frames per output frame (chain-get-supervision "
        "--frame-subsampling-factor)", int),
    Opt("--chain.left-deriv-truncate", None, "deprecated: sets --trainer.deriv-truncate-margin to minus this", int),
    Opt("--chain-opts", "", "options of nnet3-chain-train and nnet3-chain-compute-prob",
        ignored="kaldi-avg runs no nnet3-chain-* program"),
    Opt("--trainer.num-epochs", 10.0, "passes over the training data", float),
    Opt("--trainer.frames-per-iter", 800000, "input frames per archive (one job's data for one iteration)", int),
    Opt("--trainer.samples-per-iter", 400000, "egs per archive",
        int, ignored="chain/train.py sizes its archives with --trainer.frames-per-iter"),
    Opt("--trainer.num-chunk-per-minibatch", "128", "chunks per minibatch (a Kaldi minibatch rule such as "
        "128,64; iteration 0 halves it)"),
    Opt("--trainer.optimization.initial-effective-lrate", 0.0002, "effective learning rate at the start; "
        "each job trains with num-jobs x the effective rate", float),
    Opt("--trainer.optimization.final-effective-lrate", 0.00002, "effective learning rate at the end "
        "(geometric decay by data processed)", float),
    Opt("--trainer.optimization.momentum", 0.0, "momentum of nnet3-chain-train's update", float),
    Opt("--trainer.optimization.shrink-value", 1.0, "parameter scale applied when the sigmoid/tanh units "
        "saturate (1.0: never)", float),
    Opt("--trainer.optimization.shrink-saturation-threshold", 0.40, "saturation above which "
        "--trainer.optimization.shrink-value is applied", float),
    Opt("--trainer.deriv-truncate-margin", None, "backpropagate through at most this many frames of the "
        "left context (unset: no truncation)", int),
    Opt("--trainer.presoftmax-prior-scale-power", -0.25, "power of the presoftmax prior scale", float,
        ignored="chain models have no presoftmax prior scale"),
)


def script_options(own: tuple[Opt, ...]) -> tuple[Opt, ...]:
    """COMMON with a script's own rows: one of them replaces the COMMON row of its flag."""
    flags = {o.flag for o in own}
    return tuple(o for o in COMMON if o.flag not in flags) + own


@dataclass(frozen=True)
class Script:
    """One Kaldi training script kaldi-avg stands in for."""

    name: str                # as in steps/nnet3/ and steps/kaldi_avg/
    description: str
    options: tuple[Opt, ...]
    frame_level: bool = False    # train_dnn.py: egs of --egs.frames-per-eg frames, one trained per iteration
    chain: bool = False          # chain/train.py: the LF-MMI objective (kaldi_avg/chain/)


SCRIPTS = {s.name: s for s in (
    Script("train_rnn.py", "Kaldi's train_rnn.py stage with persistent ranks and no egs dump.",
           script_options(XENT + RNN)),
    Script("train_dnn.py", "Kaldi's train_dnn.py stage (feed-forward networks: TDNN, TDNN-F, CNN) with "
           "persistent ranks and no egs dump.", script_options(XENT + DNN), frame_level=True),
    Script("chain/train.py", "Kaldi's chain/train.py stage (LF-MMI: TDNN, TDNN-F, TDNN-LSTM, BLSTM chain models) "
           "with persistent ranks and no egs dump.", script_options(CHAIN), chain=True),
)}
DEFAULT_SCRIPT = "train_rnn.py"

_METAVARS = {int: "N", float: "X", kaldi_bool: "true|false"}


def get_parser(script: str = DEFAULT_SCRIPT) -> argparse.ArgumentParser:
    """`script`'s Kaldi options (+ --averaging.*, --mpi.*); every option's help says its meaning and
    default. Abbreviations are accepted as Kaldi's argparse accepts them."""
    s = SCRIPTS[script]
    p = KaldiArgumentParser(prog=f"steps/kaldi_avg/{s.name}", usage="%(prog)s [options]", description=s.description)
    p.set_defaults(script=s.name)
    for opt in s.options:   # COMMON's order first, as Kaldi's --help lists them
        help_text = f"{opt.help} (default: {opt.default})"
        if opt.ignored:
            help_text += f" [accepted, ignored: {opt.ignored}]"
        p.add_argument(opt.flag, *opt.aliases, dest=opt.dest, default=opt.default, type=opt.type,
                       metavar=_METAVARS.get(opt.type, "STR"), help=help_text.replace("%", "%%"))
    add_algorithm_options(p)
    return p


def ignored_options(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(flag, reason) of every ignored option set to something other than its default."""
    return [(opt.flag, opt.ignored) for opt in SCRIPTS[args.script].options
            if opt.ignored and getattr(args, opt.dest) != opt.default]
