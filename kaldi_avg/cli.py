"""The `kaldi-avg` command: thin subcommands that parse Kaldi-style options and call the library."""
from __future__ import annotations

import sys

import numpy as np

from .kaldi.binary import KaldiFormatError
from .kaldi.nnet3.config import ConfigError
from .options import KaldiArgumentParser, kaldi_bool

COMMANDS = {
    "init": "a freshly initialised model built from an xconfig file",
    "import": "any Kaldi nnet3 file (raw or final.mdl, binary or text) into a checkpoint",
    "export": "a checkpoint as Kaldi final.mdl (or a raw nnet3 file)",
    "compute": "network outputs for features, as nnet3-compute",
    "info": "contexts, dims and components, as nnet3-am-info",
    "train": "train_rnn.py-compatible training (see steps/kaldi_avg/train_rnn.py)",
    "experiment": "the distributed-training experiments E1-E6 (docs/results.md)",
    "install-steps": "drop-in steps/kaldi_avg/ training scripts in a Kaldi steps/ dir, run by this Python",
}


def _parser(cmd: str, usage: str) -> KaldiArgumentParser:
    return KaldiArgumentParser(prog=f"kaldi-avg {cmd}", usage=f"kaldi-avg {cmd} {usage}",
                               description=COMMANDS[cmd])


def cmd_init(argv: list[str]) -> None:
    from .model.build import init_checkpoint
    p = _parser("init", "[--lda-mat=FILE] [--seed=N] [--num-pdfs=N] [--trans-model=MDL] <network.xconfig> "
                        "<checkpoint-out>")
    p.add_argument("--lda-mat", default=None, help="matrix for the fixed-affine-layer (default: the xconfig's "
                                                   "affine-transform-file)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the initialisation")
    p.add_argument("--num-pdfs", type=int, default=None, help="value substituted for NUM_PDFS in the xconfig")
    p.add_argument("--trans-model", default=None,
                   help="file starting with a transition model (e.g. <ali-dir>/final.mdl); export then writes "
                        "a final.mdl, and NUM_PDFS defaults to its number of pdfs")
    p.add_argument("xconfig")
    p.add_argument("checkpoint_out")
    a = p.parse_args(argv)
    ckpt = init_checkpoint(a.xconfig, lda_mat=a.lda_mat, seed=a.seed, num_pdfs=a.num_pdfs,
                           trans_model_path=a.trans_model)
    ckpt.save(a.checkpoint_out)
    print(f"kaldi-avg init: wrote {a.checkpoint_out} ({ckpt.model.nnet.num_parameters()} parameters)",
          file=sys.stderr)


def cmd_import(argv: list[str]) -> None:
    from .kaldi.nnet3.am import read_nnet3_file
    from .model.checkpoint import Checkpoint
    from .model.graph import NnetModule
    p = _parser("import", "<nnet3-in> <checkpoint-out>")
    p.add_argument("nnet3_in")
    p.add_argument("checkpoint_out")
    a = p.parse_args(argv)
    model = read_nnet3_file(a.nnet3_in)
    NnetModule(model.nnet)  # fails here, naming the problem, if kaldi-avg cannot run this network
    Checkpoint(model).save(a.checkpoint_out)


def cmd_export(argv: list[str]) -> None:
    from .model.checkpoint import Checkpoint
    p = _parser("export", "[--binary=true] <checkpoint-in> <model-out>")
    p.add_argument("--binary", type=kaldi_bool, default=True, help="write in binary mode (default true)")
    p.add_argument("checkpoint_in")
    p.add_argument("model_out")
    a = p.parse_args(argv)
    Checkpoint.load(a.checkpoint_in).model.write(a.model_out, binary=a.binary)


def cmd_compute(argv: list[str]) -> None:
    import torch

    from .data.checks import InputError
    from .data.report import DataError
    from .errors import UsageError
    from .kaldi.nnet3.context import model_context
    from .kaldi.tables import MatrixTable, read_matrix_table, write_matrix_table
    from .model.checkpoint import load_model
    from .model.compute import ChunkOptions, compute_utterances
    from .model.graph import NnetModule
    p = _parser("compute", "[options] <model-in> <feats-rspecifier> <matrix-wspecifier>")
    p.add_argument("--frames-per-chunk", type=int, default=50)
    p.add_argument("--extra-left-context", type=int, default=0)
    p.add_argument("--extra-right-context", type=int, default=0)
    p.add_argument("--extra-left-context-initial", type=int, default=-1)
    p.add_argument("--extra-right-context-final", type=int, default=-1)
    p.add_argument("--online-ivectors", default="",
                   help="rspecifier of online i-vectors as matrices, one row per --online-ivector-period frames")
    p.add_argument("--online-ivector-period", type=int, default=0,
                   help="frames between the rows of the --online-ivectors matrices")
    p.add_argument("--use-priors", type=kaldi_bool, default=False,
                   help="subtract the log priors stored in the model (a final.mdl)")
    p.add_argument("--apply-exp", type=kaldi_bool, default=False, help="apply exp() to the output")
    p.add_argument("--use-gpu", default="no", choices=["yes", "no", "optional", "wait"])
    p.add_argument("model_in")
    p.add_argument("feats_rspecifier")
    p.add_argument("matrix_wspecifier")
    a = p.parse_args(argv)
    model = load_model(a.model_in)
    log_priors = None
    if a.use_priors:
        if model.priors is None:
            raise KaldiFormatError(f"{a.model_in}: --use-priors=true but the model has no priors")
        log_priors = np.log(model.priors.astype(np.float32))
    device = "cuda" if a.use_gpu != "no" and torch.cuda.is_available() else "cpu"
    if a.use_gpu == "yes" and device == "cpu":
        raise RuntimeError("--use-gpu=yes but no CUDA device is available")
    module = NnetModule(model.nnet).to(device)
    opts = ChunkOptions(a.frames_per_chunk, a.extra_left_context, a.extra_right_context,
                        a.extra_left_context_initial, a.extra_right_context_final, a.online_ivector_period)
    context = model_context(model.nnet)
    in_dim = model.nnet.input_dim("input")
    # nnet3-compute requires the i-vector dim to be the `ivector` input's, 0 for none
    ivector_dim = max(0, model.nnet.input_dim("ivector"))
    if ivector_dim and not a.online_ivectors:
        raise UsageError(f"{a.model_in}: the network has an 'ivector' input of dim {ivector_dim}; "
                         "give --online-ivectors and --online-ivector-period")
    if a.online_ivectors and not ivector_dim:
        raise UsageError(f"{a.model_in}: --online-ivectors given but the network has no 'ivector' input")
    if a.online_ivectors and a.online_ivector_period <= 0:
        raise UsageError("--online-ivectors needs --online-ivector-period > 0")
    ivector_table = MatrixTable(a.online_ivectors) if a.online_ivectors else None
    n_done = n_fail = 0

    def checked():
        nonlocal n_fail
        for utt, feats in read_matrix_table(a.feats_rspecifier):
            if feats.shape[0] == 0:
                print(f"WARNING (kaldi-avg compute) Zero-length utterance: {utt}", file=sys.stderr)
                n_fail += 1
                continue
            if feats.shape[1] != in_dim:
                raise ValueError(f"utterance {utt}: features have dim {feats.shape[1]}, the network expects "
                                 f"{in_dim}")
            if ivector_table is None:
                yield utt, feats, None
                continue
            if utt not in ivector_table:  # as nnet3-compute: the utterance fails, the others go on
                print(f"WARNING (kaldi-avg compute) No online iVector available for utterance {utt} "
                      f"in {a.online_ivectors}", file=sys.stderr)
                n_fail += 1
                continue
            ivectors = ivector_table[utt]
            if ivectors.shape[1] != ivector_dim:
                raise InputError(f"{a.online_ivectors}: utterance {utt} has i-vector dim {ivectors.shape[1]}, "
                                 f"the network's 'ivector' input expects {ivector_dim}")
            yield utt, feats, ivectors

    def outputs():
        nonlocal n_done
        for utt, out in compute_utterances(module, checked(), opts, context, log_priors):
            n_done += 1
            yield utt, np.exp(out) if a.apply_exp else out

    try:
        write_matrix_table(a.matrix_wspecifier, outputs())
    except DataError as e:  # a short i-vector matrix: compute names the utterance, we the file
        raise InputError(f"{a.online_ivectors}: {e}") from None
    print(f"LOG (kaldi-avg compute) Done {n_done} utterances, failed for {n_fail}", file=sys.stderr)
    if n_done == 0:
        raise SystemExit(1)


def cmd_info(argv: list[str]) -> None:
    from .model.checkpoint import load_model
    p = _parser("info", "<model-in>")
    p.add_argument("model_in")
    a = p.parse_args(argv)
    sys.stdout.write(load_model(a.model_in).info())


def cmd_train(argv: list[str]) -> None:
    from .train.cli import main as train_main
    train_main(argv)


def cmd_experiment(argv: list[str]) -> None:
    from .experiments.command import main as experiment_main
    experiment_main(argv)


def cmd_install_steps(argv: list[str]) -> None:
    from .install_steps import install_steps
    p = _parser("install-steps", "<kaldi-steps-dir>  (e.g. $KALDI_ROOT/egs/wsj/s5/steps)")
    p.add_argument("steps_dir")
    a = p.parse_args(argv)
    for path in install_steps(a.steps_dir):
        print(f"kaldi-avg install-steps: wrote {path} (runs {sys.executable})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        print("usage: kaldi-avg <command> [options] <args>\n\ncommands:", file=sys.stderr)
        for name, what in COMMANDS.items():
            print(f"  {name:<{width}}  {what}", file=sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"kaldi-avg: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 1
    try:
        globals()[f"cmd_{argv[0].replace('-', '_')}"](argv[1:])
    except (KaldiFormatError, ConfigError, OSError, ValueError, RuntimeError) as e:
        print(f"kaldi-avg {argv[0]}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
