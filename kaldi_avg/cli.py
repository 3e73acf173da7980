"""The `kaldi-avg` command: thin subcommands that parse Kaldi-style options and call the library."""
from __future__ import annotations

import sys

from .errors import UsageError, import_extra
from .options import KaldiArgumentParser, kaldi_bool

COMMANDS = {
    "init": "a freshly initialised model built from an xconfig file",
    "import": "any Kaldi nnet3 file (raw or final.mdl, binary or text) into a checkpoint",
    "export": "a checkpoint as Kaldi final.mdl (or a raw nnet3 file)",
    "compute": "network outputs for features, as nnet3-compute",
    "info": "contexts, dims and components, as nnet3-am-info",
    "train": "one rank of train_rnn.py- or train_dnn.py-compatible training ([train_dnn.py] [options])",
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
    from .model.compute import ChunkOptions
    from .model.compute_tables import compute_device, compute_tables
    p = _parser("compute", "[options] <model-in> <feats-rspecifier> <matrix-wspecifier>")
    p.add_argument("--frames-per-chunk", type=int, default=50)
    p.add_argument("--extra-left-context", type=int, default=0)
    p.add_argument("--extra-right-context", type=int, default=0)
    p.add_argument("--extra-left-context-initial", type=int, default=-1)
    p.add_argument("--extra-right-context-final", type=int, default=-1)
    p.add_argument("--frame-subsampling-factor", type=int, default=1,
                   help="output every f-th frame, ceil(T/f) rows (chain models; frames-per-chunk rounded up to "
                        "a multiple of it)")
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
    try:
        opts = ChunkOptions(a.frames_per_chunk, a.extra_left_context, a.extra_right_context,
                            a.extra_left_context_initial, a.extra_right_context_final, a.online_ivector_period,
                            a.frame_subsampling_factor)
    except ValueError as e:
        raise UsageError(str(e)) from None
    done, failed = compute_tables(a.model_in, a.feats_rspecifier, a.matrix_wspecifier, opts, a.online_ivectors,
                                  a.use_priors, a.apply_exp, compute_device(a.use_gpu))
    print(f"LOG (kaldi-avg compute) Done {done} utterances, failed for {failed}", file=sys.stderr)
    if done == 0:
        raise SystemExit(1)


def cmd_info(argv: list[str]) -> None:
    from .model.checkpoint import load_model
    p = _parser("info", "<model-in>")
    p.add_argument("model_in")
    a = p.parse_args(argv)
    sys.stdout.write(load_model(a.model_in).info())


def cmd_train(argv: list[str]) -> None:
    from .train.cli import main as train_main
    code = train_main(argv)
    if code:
        raise SystemExit(code)   # a recipe under `set -e` must stop


def cmd_experiment(argv: list[str]) -> None:
    import_extra("matplotlib", "plots", "kaldi-avg experiment (a PNG per experiment)")
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
    except (UsageError, OSError) as e:   # the user's options, data or files; anything else is a bug
        print(f"kaldi-avg {argv[0]}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
