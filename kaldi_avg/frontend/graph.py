"""`utils/mkgraph.sh`: HCLG.fst from a lang dir with G.fst and a model dir (tree + final.mdl).

The same recipe with kaldifst + khg (docs/dependencies.md 3):
  LG   = L_disambig o G, determinize_star (log), minimize_encoded      [fstpushspecial: n/a]
  CLG  = compose_context(LG)  (ilabels, context size and position from the tree)
  Ha   = make-h-transducer (transition scale), which lists the disambiguation transition-ids
  HCLGa= Ha o CLG, determinize_star (log), rmsymbols(disambig tids), rmepsilon, minimize_encoded
  HCLG = add-self-loops (self-loop scale, reorder)
with mkgraph.sh's defaults --transition-scale 1.0 and --self-loop-scale 0.1 (1.0 for chain models).
The graph dir gets HCLG.fst as a const FST (what Kaldi and vosk read), HCLG.vector.fst (the
same graph as a vector FST, which kaldifst can read), disambig_tid.int, num_pdfs, words.txt,
phones.txt and the phones/ files mkgraph.sh copies.
"""
from __future__ import annotations

import os
import sys

import kaldi_hmm_gmm as khg
import kaldifst

from ..atomic import atomic_path, copy_file, write_lines
from ..kaldi.transition import read_transition_model
from ..options import KaldiArgumentParser
from .cliopts import parse_kaldi_args
from .hmm import read_tree, to_khg
from .lang import Lang, LangError

VECTOR_GRAPH = "HCLG.vector.fst"


def read_fst(path: str):
    if not os.path.isfile(path):
        raise LangError(f"{path}: no such FST")
    fst = kaldifst.StdVectorFst.read(path)
    if fst is None:
        raise LangError(f"{path}: not a vector FST that kaldifst can read")
    return fst


def write_fst(fst, path: str, const: bool = False) -> None:
    with atomic_path(path) as tmp:
        ok = (kaldifst.StdConstFst(fst) if const else fst).write(tmp)
        if not ok:
            raise OSError(f"{path}: could not write FST")


def remove_input_symbols(fst, symbols: list[int]) -> None:
    """fstrmsymbols: input labels in `symbols` become epsilon (kaldifst has no mutable arcs,
    so the arcs of affected states are rebuilt)."""
    drop = set(symbols)
    for s in range(fst.num_states):
        arcs = list(kaldifst.ArcIterator(fst, s))
        if not any(a.ilabel in drop for a in arcs):
            continue
        rebuilt = [kaldifst.StdArc(0 if a.ilabel in drop else a.ilabel, a.olabel, a.weight, a.nextstate)
                   for a in arcs]
        fst.delete_arcs(s, fst.num_arcs(s))
        for a in rebuilt:
            fst.add_arc(s, a)


def make_lg(lang: Lang):
    L = read_fst(lang.path("L_disambig.fst"))
    kaldifst.arcsort(L, sort_type="olabel")
    G = read_fst(lang.path("G.fst"))
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G)
    kaldifst.determinize_star(LG, use_log=True)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    return LG


def mkgraph(lang_dir: str, model_dir: str, graph_dir: str, transition_scale: float = 1.0,
            self_loop_scale: float = 0.1, context: str | None = None) -> None:
    """`utils/mkgraph.sh [--mono] [--transition-scale 1.0] [--self-loop-scale 0.1] <lang> <model-dir> <graph>`
    (Kaldi's defaults: make-h-transducer's transition scale 1.0, add-self-loops' 0.1). Chain
    models are built with `--self-loop-scale 1.0` (docs/kaldi-formats.md 7.1); as mkgraph.sh, a
    model dir with a `frame_subsampling_factor` file and the 0.1 default gets a warning."""
    if os.path.isfile(os.path.join(model_dir, "frame_subsampling_factor")) and self_loop_scale == 0.1:
        print("mkgraph.sh: WARNING: chain models need '--self-loop-scale 1.0'", file=sys.stderr)
    lang = Lang.load(lang_dir)
    for f in ("L_disambig.fst", "G.fst", "phones.txt", "words.txt", "phones/silence.csl", "phones/disambig.int"):
        if not os.path.isfile(lang.path(f)):
            raise LangError(f"mkgraph: expected {lang.path(f)} to exist")
    model, tree_path = os.path.join(model_dir, "final.mdl"), os.path.join(model_dir, "tree")
    for f in (model, tree_path):
        if not os.path.isfile(f):
            raise LangError(f"mkgraph: expected {f} to exist")
    tree = read_tree(tree_path)
    trans_model = read_transition_model(model)
    khg_tm = to_khg(trans_model, tree, source=model)
    N, P = tree.context_width, tree.central_position
    if context == "mono" and (N, P) != (1, 0) or context == "quinphone" and (N, P) != (5, 2):
        raise LangError(f"mkgraph: --{context} does not match the tree (N={N}, P={P})")

    LG = make_lg(lang)
    CLG, ilabels = kaldifst.compose_context(disambig_syms=lang.ints("disambig"), context_width=N,
                                            central_position=P, ifst=LG)
    kaldifst.arcsort(CLG, sort_type="ilabel")
    Ha, disambig_tids = khg.get_h_transducer(ilabel_info=ilabels, ctx_dep=tree, trans_model=khg_tm,
                                             config=khg.HTransducerConfig(transition_scale=transition_scale))
    HCLGa = kaldifst.compose(Ha, CLG)
    kaldifst.determinize_star(HCLGa, use_log=True)
    remove_input_symbols(HCLGa, disambig_tids)
    kaldifst.rmepsilon(HCLGa)
    kaldifst.minimize_encoded(HCLGa)
    HCLG = khg.add_self_loops(self_loop_scale=self_loop_scale, disambig_syms=[], reorder=True,
                              trans_model=khg_tm, ifst=HCLGa)
    if HCLG.num_states == 0:
        raise LangError(f"{graph_dir}: the decoding graph is empty (G and L share no words?)")

    os.makedirs(os.path.join(graph_dir, "phones"), exist_ok=True)
    write_fst(HCLG, os.path.join(graph_dir, "HCLG.fst"), const=True)
    write_fst(HCLG, os.path.join(graph_dir, VECTOR_GRAPH))
    write_lines(os.path.join(graph_dir, "disambig_tid.int"), map(str, disambig_tids))
    write_lines(os.path.join(graph_dir, "num_pdfs"), [str(trans_model.num_pdfs)])
    copy_file(lang.path("words.txt"), os.path.join(graph_dir, "words.txt"))
    copy_file(lang.path("phones.txt"), os.path.join(graph_dir, "phones.txt"))
    for name in ("word_boundary.txt", "word_boundary.int", "align_lexicon.txt", "align_lexicon.int",
                 "disambig.txt", "disambig.int", "silence.csl"):
        if os.path.isfile(lang.path("phones", name)):
            copy_file(lang.path("phones", name), os.path.join(graph_dir, "phones", name))


def load_graph(graph_dir: str):
    """The decoding graph of a graph dir as a vector FST (our HCLG.vector.fst, or a vector
    HCLG.fst as Kaldi's mkgraph.sh writes it)."""
    vector = os.path.join(graph_dir, VECTOR_GRAPH)
    if os.path.isfile(vector):
        return read_fst(vector)
    path = os.path.join(graph_dir, "HCLG.fst")
    if not os.path.isfile(path):
        raise LangError(f"{graph_dir}: no HCLG.fst")
    fst = kaldifst.StdVectorFst.read(path)
    if fst is None:
        raise LangError(f"{path}: a const FST without {VECTOR_GRAPH} beside it (kaldifst reads only "
                        f"vector FSTs; convert it with fstconvert --fst_type=vector)")
    return fst


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="utils/mkgraph.sh",
                            usage="utils/mkgraph.sh [options] <lang-dir> <model-dir> <graphdir>",
                            description="Builds HCLG.fst (const, plus a vector copy) like Kaldi's mkgraph.sh.")
    p.add_argument("--mono", dest="context", action="store_const", const="mono")
    p.add_argument("--quinphone", dest="context", action="store_const", const="quinphone")
    p.add_argument("--transition-scale", type=float, default=1.0)
    p.add_argument("--self-loop-scale", type=float, default=0.1)
    p.add_argument("lang_dir")
    p.add_argument("model_dir")
    p.add_argument("graph_dir")
    a = parse_kaldi_args(p, argv)
    try:
        mkgraph(a.lang_dir, a.model_dir, a.graph_dir, a.transition_scale, a.self_loop_scale, a.context)
    except (LangError, OSError, ValueError) as e:
        print(f"mkgraph.sh: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
