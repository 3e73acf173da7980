"""`steps/nnet3/chain/build_tree.sh [options] <num-leaves> <data> <lang> <ali-dir> <tree-dir>` without
Kaldi (also `python -m kaldi_avg.chain.build_tree`): stage 1 of kaldi_avg.chain.prepare with Kaldi's
command line (docs/chain.md 6.2, 6.4, 8).

<tree-dir> gets what steps/nnet3/chain/train.py reads from it: `tree`, `final.mdl`, `ali.N.gz`
(<ali-dir>'s alignments converted to the chain topology at 1/--frame-subsampling-factor of the
frame rate), `num_jobs`, `phones.txt`; and `0.trans_mdl`, `topo`, `frame_subsampling_factor`,
the cmvn/delta/splice opts of <ali-dir>, logs under log/.

What differs from Kaldi's script:
* The tree is a monophone one (2 pdfs per phone, or per set of <lang>/phones/sets.int), whatever
  `--context-opts` and <num-leaves> ask for (said once on stderr): kaldi-hmm-gmm binds none of
  acc-tree-stats, cluster-phones or build-tree. So no features are read (<data> must have
  feats.scp, as Kaldi checks) and `--cluster-thresh`, `--tree-stats-opts`,
  `--cluster-phones-opts` and `--leftmost-questions-truncate` are accepted and unused.
* `final.mdl` is the chain transition model alone (0.trans_mdl's bytes), not gmm-init-model's GMM:
  train.py's ali-to-phones and copy-transition-model, and mkgraph.sh, read only the transition
  model at the start of the file.
* <lang>/topo must be gen_topo.py's chain topology (one state; forward pdf-class 0, self-loop
  pdf-class 1) for the lang dir's silence and nonsilence phones: the tree is built for it.
"""
from __future__ import annotations

import os
import shlex
import sys

from ..atomic import copy_file, write_text
from ..errors import UsageError
from ..kaldi.binary import KaldiFormatError, KaldiReader
from ..kaldi.transition import HmmTopology
from ..options import KaldiArgumentParser, kaldi_bool
from .prepare import PrepareError, PrepareOptions, PrepareSummary, lang_phones, stage_tree
from .topology import is_chain_topology

PROG = "steps/nnet3/chain/build_tree.sh"


def context_width(context_opts: str) -> int:
    """The --context-width of acc-tree-stats' options (its default, 3, when not given)."""
    words = shlex.split(context_opts)
    width = 3
    for i, w in enumerate(words):
        name, eq, value = w.partition("=")
        if name == "--context-width":
            value = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            try:
                width = int(value)
            except ValueError:
                raise PrepareError(f"--context-opts={context_opts!r}: --context-width needs an integer") from None
    return width


def _check_lang(lang_dir: str, ali_dir: str) -> None:
    nonsil, sil, _ = lang_phones(lang_dir)
    topo_path = os.path.join(lang_dir, "topo")
    if not os.path.isfile(topo_path):
        raise PrepareError(f"{topo_path}: missing (the chain topology: steps/nnet3/chain/gen_topo.py)")
    try:
        topo = HmmTopology.read(KaldiReader.open(topo_path))
    except (KaldiFormatError, OSError) as e:
        raise PrepareError(f"{topo_path}: {e}") from None
    if not is_chain_topology(topo) or set(topo.phones) != set(nonsil) | set(sil):
        raise PrepareError(f"{topo_path}: not gen_topo.py's chain topology for the phones of {lang_dir}/phones "
                           "(the pip-only tree is built for that topology; run steps/nnet3/chain/gen_topo.py)")
    ours, theirs = os.path.join(lang_dir, "phones.txt"), os.path.join(ali_dir, "phones.txt")
    if not os.path.isfile(ours):
        raise PrepareError(f"{ours}: missing")
    if os.path.isfile(theirs) and open(ours).read().split() != open(theirs).read().split():
        raise PrepareError(f"phone symbol tables {ours} and {theirs} are not compatible")


def build_tree(num_leaves: int, data_dir: str, lang_dir: str, ali_dir: str, tree_dir: str,
               frame_subsampling_factor: int = 1, alignment_subsampling_factor: int | None = None,
               context_opts: str = "", repeat_frames: bool = False, say=None) -> PrepareSummary:
    """The script (module docstring); `say` gets the one line about the monophone tree."""
    for f in (os.path.join(data_dir, "feats.scp"), os.path.join(ali_dir, "final.mdl"),
              os.path.join(ali_dir, "ali.1.gz")):
        if not os.path.isfile(f):
            raise PrepareError(f"{f}: no such file")
    if frame_subsampling_factor < 1 or (alignment_subsampling_factor or 1) < 1:
        raise PrepareError("--frame-subsampling-factor and --alignment-subsampling-factor must be >= 1")
    width = context_width(context_opts)
    _check_lang(lang_dir, ali_dir)
    os.makedirs(os.path.join(tree_dir, "log"), exist_ok=True)
    for name in ("splice_opts", "cmvn_opts", "delta_opts"):
        if os.path.isfile(os.path.join(ali_dir, name)):
            copy_file(os.path.join(ali_dir, name), os.path.join(tree_dir, name))
    factor = alignment_subsampling_factor or frame_subsampling_factor
    summary = PrepareSummary()
    stage_tree(lang_dir, ali_dir, tree_dir, PrepareOptions(frame_subsampling_factor=factor,
                                                           repeat_frames=repeat_frames), summary)
    write_text(os.path.join(tree_dir, "frame_subsampling_factor"), f"{frame_subsampling_factor}\n")
    if say and (width != 1 or num_leaves > summary.num_pdfs):
        say(f"{PROG}: pip-only, the tree is a monophone one ({summary.num_pdfs} pdfs), not the "
            f"{num_leaves}-leaf tree of context width {width} asked for (--context-opts {context_opts!r}): "
            "that needs Kaldi's acc-tree-stats/build-tree (docs/chain.md 6.4)")
    return summary


def main(argv: list[str] | None = None) -> int:
    from ..frontend.cliopts import parse_kaldi_args
    argv = sys.argv[1:] if argv is None else argv
    p = KaldiArgumentParser(prog=PROG, usage=f"{PROG} [options] <#leaves> <data> <lang> <ali-dir> <exp-dir>",
                            description="A chain tree directory (pip-only: monophone tree) from GMM "
                                        "alignments; see kaldi_avg/chain/build_tree.py.")
    p.add_argument("--frame-subsampling-factor", type=int, default=1)
    p.add_argument("--alignment-subsampling-factor", type=int, default=None)
    p.add_argument("--context-opts", default="", help="acc-tree-stats' context options (pip-only: monophone)")
    p.add_argument("--repeat-frames", type=kaldi_bool, default=False)
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; jobs run in-process")
    p.add_argument("--stage", type=int, default=-5, help="accepted for compatibility; every step runs")
    p.add_argument("--exit-stage", type=int, default=-100, help="accepted for compatibility")
    for name in ("--cluster-thresh", "--leftmost-questions-truncate", "--tree-stats-opts",
                 "--cluster-phones-opts", "--train-tree"):
        p.add_argument(name, default=None, help="accepted; unused by the monophone tree")
    p.add_argument("num_leaves", type=int)
    p.add_argument("data_dir")
    p.add_argument("lang_dir")
    p.add_argument("ali_dir")
    p.add_argument("tree_dir")
    a = parse_kaldi_args(p, argv)
    print(f"{PROG} " + shlex.join(argv), file=sys.stderr)
    try:
        s = build_tree(a.num_leaves, a.data_dir, a.lang_dir, a.ali_dir, a.tree_dir, a.frame_subsampling_factor,
                       a.alignment_subsampling_factor, a.context_opts, a.repeat_frames,
                       say=lambda line: print(line, file=sys.stderr))
    except (UsageError, OSError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    print(f"{PROG}: Done building tree ({s.num_pdfs} pdfs; {s.converted} alignments converted, "
          f"{s.convert_failed} failed)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
