"""`python -m kaldi_avg.chain.make_den_fst`: Kaldi's `chain-make-den-fst` and `chain-est-phone-lm`.

    python -m kaldi_avg.chain.make_den_fst <tree> <transition-model> <phone-lm-fst> \\
        <denominator-fst-out> <normalization-fst-out>
    python -m kaldi_avg.chain.make_den_fst <dir-in> <dir-out>
        (<dir-in>/tree, <dir-in>/0.trans_mdl or final.mdl, <dir-in>/phone_lm.fst ->
         <dir-out>/den.fst, <dir-out>/normalization.fst)
    python -m kaldi_avg.chain.make_den_fst est-phone-lm [--ngram-order=4]
        [--num-extra-lm-states=1000] [--no-prune-ngram-order=3] <phone-seqs-rspecifier> <phone-lm-fst-out>

Arguments in Kaldi's order (src/chainbin/chain-make-den-fst.cc, chain-est-phone-lm.cc); the
FSTs are binary OpenFst, as Kaldi writes them; `-` is stdout.  The work is done by
`den_graph.make_den_fst` and `phone_lm.estimate_phone_lm` (docs/chain.md 1-2).  A problem with
the arguments or files is one line on stderr and exit status 1.
"""
from __future__ import annotations

import logging
import os
import sys

from ..errors import UsageError
from ..options import KaldiArgumentParser, kaldi_bool

PROG = "python -m kaldi_avg.chain.make_den_fst"


def _out(path: str) -> str:
    return "" if path == "-" else path   # kaldifst writes "" to stdout


def est_phone_lm(argv: list[str]) -> None:
    from ..kaldi.tables import read_int_vector_table
    from .den_graph import write_fst
    from .phone_lm import LanguageModelEstimator, LanguageModelOptions
    defaults = LanguageModelOptions()
    p = KaldiArgumentParser(prog=f"{PROG} est-phone-lm",
                            usage=f"{PROG} est-phone-lm [options] <phone-seqs-rspecifier> <phone-lm-fst-out>",
                            description="Un-smoothed phone language model for 'chain' training (an "
                                        "epsilon-free deterministic acceptor), as chain-est-phone-lm.")
    p.add_argument("--ngram-order", type=int, default=defaults.ngram_order,
                   help="n-gram order for the phone language model used for the 'denominator model'")
    p.add_argument("--num-extra-lm-states", type=int, default=defaults.num_extra_lm_states,
                   help="number of LM states desired on top of the number determined by "
                        "--no-prune-ngram-order")
    p.add_argument("--no-prune-ngram-order", type=int, default=defaults.no_prune_ngram_order,
                   help="n-gram order below which the language model is not pruned")
    p.add_argument("--binary", type=kaldi_bool, default=True,
                   help="accepted for compatibility; the FST is binary either way, as in Kaldi")
    p.add_argument("phone_seqs_rspecifier")
    p.add_argument("phone_lm_out")
    a = p.parse_args(argv)
    estimator = LanguageModelEstimator(LanguageModelOptions(a.ngram_order, a.num_extra_lm_states,
                                                            a.no_prune_ngram_order))
    num_seqs = 0
    for _, seq in read_int_vector_table(a.phone_seqs_rspecifier):
        estimator.add_counts(seq)
        num_seqs += 1
    fst = estimator.estimate()
    write_fst(fst, _out(a.phone_lm_out))
    num_arcs = sum(fst.num_arcs(s) for s in range(fst.num_states))
    print(f"{PROG} est-phone-lm: {num_seqs} phone sequences; [hard] backoff target "
          f"{estimator.target_num_states} states, pruned from {estimator.pruned_from} to {fst.num_states}; "
          f"{fst.num_states} states, {num_arcs} arcs, perplexity on training data "
          f"{estimator.perplexity:.6g}; wrote {a.phone_lm_out}", file=sys.stderr)


def make_den_fst(argv: list[str]) -> None:
    from .den_graph import load_tree_and_transition_model, make_den_fst, read_fst, write_fst
    p = KaldiArgumentParser(prog=PROG,
                            usage=f"{PROG} <tree> <transition-model> <phone-lm-fst> <denominator-fst-out> "
                                  f"<normalization-fst-out>\n   or: {PROG} <dir-in> <dir-out>\n   or: "
                                  f"{PROG} est-phone-lm [options] <phone-seqs-rspecifier> <phone-lm-fst-out>",
                            description="Denominator FST (an epsilon-free acceptor with pdf-id+1 labels) and "
                                        "normalization FST for 'chain' training, as chain-make-den-fst.")
    p.add_argument("args", nargs="*")
    args = p.parse_args(argv).args
    if len(args) == 2:
        dir_in, dir_out = args
        trans = os.path.join(dir_in, "0.trans_mdl")
        if not os.path.exists(trans):
            trans = os.path.join(dir_in, "final.mdl")
        args = [os.path.join(dir_in, "tree"), trans, os.path.join(dir_in, "phone_lm.fst"),
                os.path.join(dir_out, "den.fst"), os.path.join(dir_out, "normalization.fst")]
    elif len(args) != 5:
        p.error(f"expected 5 arguments (or 2 directories), got {len(args)}")
    tree, trans_model, phone_lm, den_out, norm_out = args
    parts = load_tree_and_transition_model(tree, trans_model)
    den, norm = make_den_fst(parts, read_fst(phone_lm, "phone LM"), what=phone_lm)
    write_fst(den, _out(den_out))
    write_fst(norm, _out(norm_out))
    num_arcs = sum(den.num_arcs(s) for s in range(den.num_states))
    print(f"{PROG}: denominator FST with {den.num_states} states and {num_arcs} arcs written to {den_out}, "
          f"normalization FST to {norm_out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(format="%(levelname)s (%(name)s) %(message)s", level=logging.WARNING)
    est = bool(argv) and argv[0] == "est-phone-lm"
    try:
        if est:
            est_phone_lm(argv[1:])
        else:
            make_den_fst(argv)
    except (UsageError, OSError) as e:   # the user's options, data or files; anything else is a bug
        print(f"{PROG}{' est-phone-lm' if est else ''}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
