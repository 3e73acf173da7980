"""Training graphs, equal alignment, Viterbi alignment and statistics of a monophone GMM system.

The Kaldi programs reproduced here (per utterance):
  compile-train-graphs   transition and self-loop scales 0: gmm-align-compiled adds the
                         probabilities itself (the khg egs default of 1.0 counts them twice)
  align-equal-compiled   random equal-length path, seeded with Kaldi's StringHasher(utt)
  gmm-boost-silence      silence GMM weights scaled (alignment only)
  gmm-align-compiled     transition probs added with --transition-scale / --self-loop-scale,
                         beam, then retry beam; utterances that still fail are reported
  gmm-acc-stats-ali      GMM statistics (component posteriors per frame) and transition counts
and `steps/align_si.sh` on top of them (also a command: python -m kaldi_avg.frontend.gmm_align).
Training graphs stay in memory (Kaldi's fsts.JOB.gz are not written).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from ..atomic import copy_file, write_lines
from ..kaldi.binary import KaldiFormatError
from ..kaldi.runlog import JobLog
from ..options import KaldiArgumentParser, kaldi_bool
from .cliopts import parse_kaldi_args
from .featpipe import read_cmvn_opts
from .gmm_data import Job, load_jobs, write_alignments
from .gmm_model import GmmModel
from .lang import Lang, read_symbol_table


def kaldi_string_hash(key: str) -> int:
    """Kaldi's StringHasher (util/stl-utils.h) truncated to int32 as align-equal-compiled does."""
    h = 0
    for c in key.encode("utf-8"):
        h = (h * 7853 + (c if c < 128 else c - 256)) & 0xFFFFFFFFFFFFFFFF
    h &= 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


@dataclass(frozen=True)
class AlignOptions:
    """gmm-align-compiled options (train_mono.sh / align_si.sh defaults)."""
    beam: float = 10.0
    retry_beam: float = 40.0
    careful: bool = False
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1


def make_graph_compiler(tm: khg.TransitionModel, tree: khg.ContextDependency,
                        lexicon_fst) -> khg.TrainingGraphCompiler:
    opts = khg.TrainingGraphCompilerOptions(transition_scale=0.0, self_loop_scale=0.0)
    return khg.TrainingGraphCompiler(tm, tree, lexicon_fst, [], opts)


def equal_align(graph, num_frames: int, utt: str) -> list[int] | None:
    """align-equal-compiled for one utterance; None when no path of that length exists."""
    if num_frames == 0 or graph.start < 0:
        return None
    ok, path = kaldifst.equal_align(graph, num_frames, kaldi_string_hash(utt))
    if not ok:
        return None
    ok, tids, _, _ = kaldifst.get_linear_symbol_sequence(path)
    return list(tids) if ok and len(tids) == num_frames else None


def boosted_silence_model(am: khg.AmDiagGmm, silence_pdfs: list[int], boost: float) -> khg.AmDiagGmm:
    """gmm-boost-silence: a copy whose silence GMM weights are scaled by `boost` (not renormalised)."""
    out = khg.AmDiagGmm()
    out.copy_from_am_diag_gmm(am)
    if boost != 1.0:
        for pdf in silence_pdfs:
            gmm = out.get_pdf(pdf)
            gmm.set_weights(np.asarray(gmm.weights, np.float32) * boost)
            gmm.compute_gconsts()
    return out


def silence_pdfs(tm: khg.TransitionModel, phones: list[int]) -> list[int]:
    # pdfs shared with other phones (e.g. SIL with SIL_B via phones/sets) are boosted too, as
    # gmm-boost-silence does (it only warns)
    _, pdfs = khg.get_pdfs_for_phones(tm, phones)
    return sorted(pdfs)


@dataclass
class AlignResult:
    tids: list[int] | None
    log_like: float
    retried: bool


def align_utterance(am: khg.AmDiagGmm, tm: khg.TransitionModel, graph, feats: np.ndarray, utt: str,
                    opts: AlignOptions) -> AlignResult:
    """gmm-align-compiled on one utterance (the graph is copied before its probabilities are added)."""
    fst = graph.copy()
    khg.add_transition_probs(trans_model=tm, disambig_syms=[], transition_scale=opts.transition_scale,
                             self_loop_scale=opts.self_loop_scale, fst=fst)
    decodable = khg.DecodableAmDiagGmmScaled(am, tm, np.ascontiguousarray(feats, np.float32),
                                             opts.acoustic_scale)
    config = khg.AlignConfig(beam=opts.beam, retry_beam=opts.retry_beam, careful=opts.careful)
    done, _, retried, like, _, tids, _ = khg.align_utterance_wrapper(
        config, utt, opts.acoustic_scale, fst, decodable, 0, 0, 0, 0.0, 0)
    if not done or len(tids) != feats.shape[0]:
        return AlignResult(None, 0.0, bool(retried))
    return AlignResult(list(tids), float(like), bool(retried))


class GmmStats:
    """gmm-acc-stats-ali output: per-pdf GMM statistics (Kaldi's AccumulateForGmm per frame, i.e.
    component posteriors under the GMM of the aligned pdf) plus transition-id counts."""

    def __init__(self, am: khg.AmDiagGmm, num_tids: int):
        self.accs = khg.AccumAmDiagGmm()
        self.accs.init(am, int(khg.GmmUpdateFlags.kGmmAll))
        self.tid_counts = np.zeros(num_tids + 1, np.float64)

    def add(self, am: khg.AmDiagGmm, feats: np.ndarray, tids: np.ndarray, tid2pdf: np.ndarray) -> float:
        """Accumulates one aligned utterance; returns its total log-likelihood."""
        self.tid_counts += np.bincount(tids, minlength=self.tid_counts.size)
        acc = self.accs.accumulate_for_gmm
        return sum(acc(am, row, int(pdf), 1.0) for row, pdf in zip(feats, tid2pdf[tids]))


def compile_graphs(model: GmmModel, lang: Lang, jobs: list[Job], log_dir: str) -> dict[str, object]:
    """compile-train-graphs for every job (graphs stay in memory instead of fsts.JOB.gz)."""
    lexicon = kaldifst.StdVectorFst.read(lang.path("L.fst"))
    if lexicon is None:
        raise OSError(f"{lang.path('L.fst')}: could not read the lexicon FST")
    compiler = make_graph_compiler(model.khg_trans_model, model.tree, lexicon)
    graphs = {}
    for job in jobs:
        with JobLog(os.path.join(log_dir, f"compile_graphs.{job.index}.log"),
                    f"compile-train-graphs {lang.path('L.fst')} (job {job.index})") as log:
            failed = 0
            for u in job.utts:
                graph = compiler.compile_graph_from_text(u.word_ids)
                if graph.num_states == 0:
                    log(f"WARNING: Empty decoding graph for utterance {u.id}")
                    failed += 1
                    continue
                graphs[u.id] = graph
            log(f"compile-train-graphs: succeeded for {len(job.utts) - failed} graphs, failed for {failed}")
    return graphs


def align_job(am, tm, job: Job, graphs: dict[str, object], opts: AlignOptions, log: JobLog) -> dict[str, list[int]]:
    """Aligns one job's utterances, logging Kaldi's per-utterance warnings and summary."""
    out: dict[str, list[int]] = {}
    tot_like = frames = retried = 0
    for u in job.utts:
        graph = graphs.get(u.id)
        if graph is None:
            continue
        res = align_utterance(am, tm, graph, u.feats, u.id, opts)
        retried += res.retried
        if res.retried:
            log(f"WARNING: Retrying utterance {u.id} with beam {opts.retry_beam}")
        if res.tids is None:
            log(f"WARNING: Did not successfully decode file {u.id}, len = {u.feats.shape[0]}")
            continue
        out[u.id] = res.tids
        tot_like += res.log_like
        frames += len(res.tids)
    failed = [u.id for u in job.utts if u.id in graphs and u.id not in out]
    log(f"Overall log-likelihood per frame is {tot_like / max(frames, 1):.6g} over {frames} frames.")
    log(f"Retried {retried} out of {len(job.utts)} utterances.")
    log(f"Done {len(out)}, errors on {len(failed)}")
    if failed:
        log("Utterances that failed to align: " + " ".join(failed))
    return out


def align_jobs(model: GmmModel, jobs: list[Job], graphs: dict[str, object], opts: AlignOptions,
               boost_silence: float, silence_phones: list[int], ali_dir: str, log_name: str
               ) -> tuple[dict[str, list[int]], list[str]]:
    """gmm-align-compiled with a gmm-boost-silence copy of the model over every job; writes
    `ali.JOB.gz` and `log/<log_name with JOB>`; returns (alignments, utterances that failed)."""
    am = boosted_silence_model(model.am, silence_pdfs(model.khg_trans_model, silence_phones), boost_silence)
    alignments: dict[str, list[int]] = {}
    failed: list[str] = []
    for job in jobs:
        with JobLog(os.path.join(ali_dir, "log", log_name.replace("JOB", str(job.index))),
                    f"gmm-align-compiled --transition-scale={opts.transition_scale} "
                    f"--acoustic-scale={opts.acoustic_scale} --self-loop-scale={opts.self_loop_scale} "
                    f"--beam={opts.beam} --retry-beam={opts.retry_beam} --careful={str(opts.careful).lower()} "
                    f"<gmm-boost-silence --boost={boost_silence} model> (job {job.index})") as log:
            job_ali = align_job(am, model.khg_trans_model, job, graphs, opts, log)
        failed += [u.id for u in job.utts if u.id not in job_ali]
        write_alignments(os.path.join(ali_dir, f"ali.{job.index}.gz"), sorted(job_ali.items()))
        alignments.update(job_ali)
    return alignments, failed


def report_failures(program: str, failed: list[str], log_glob: str) -> None:
    if failed:
        print(f"{program}: {len(failed)} utterance(s) failed to align (listed in {log_glob})", file=sys.stderr)


def _copy_if_exists(src: str, dst: str) -> None:
    if os.path.isfile(src):
        copy_file(src, dst)  # follows symlinks (final.mdl -> 40.mdl), as cp does


def start_output_dir(prog: str, data_dir: str, lang_dir: str, src_dir: str, out_dir: str, nj: int,
                     required: tuple[str, ...] = ()) -> Lang:
    """What align_si.sh and align_fmllr_lats.sh do before their jobs: the inputs checked (the lang's
    `required` files too), `out_dir`/log, num_jobs, and the copies of phones.txt, tree, final.mdl,
    cmvn_opts, delta_opts, final.occs. Returns the lang."""
    lang = Lang.load(lang_dir)
    for f in (os.path.join(data_dir, "text"), lang.path("oov.int"), *(lang.path(r) for r in required),
              os.path.join(src_dir, "tree"), os.path.join(src_dir, "final.mdl")):
        if not os.path.isfile(f):
            raise FileNotFoundError(f"{prog}: expected file {f} to exist")
    if os.path.isfile(os.path.join(src_dir, "final.mat")):
        raise ValueError(f"{src_dir}/final.mat: LDA+MLLT models are not supported (delta features only)")
    src_phones = os.path.join(src_dir, "phones.txt")
    if os.path.isfile(src_phones) and read_symbol_table(src_phones) != lang.phones:
        raise ValueError(f"phone symbol tables {lang.path('phones.txt')} and {src_phones} are not compatible")
    os.makedirs(os.path.join(out_dir, "log"), exist_ok=True)
    write_lines(os.path.join(out_dir, "num_jobs"), [str(nj)])
    copy_file(lang.path("phones.txt"), os.path.join(out_dir, "phones.txt"))
    for name in ("tree", "final.mdl", "cmvn_opts", "delta_opts", "final.occs"):
        _copy_if_exists(os.path.join(src_dir, name), os.path.join(out_dir, name))
    return lang


def align_si(data_dir: str, lang_dir: str, src_dir: str, ali_dir: str, nj: int = 4, beam: float = 10.0,
             retry_beam: float = 40.0, careful: bool = False, boost_silence: float = 1.0) -> dict[str, list[int]]:
    """`steps/align_si.sh [opts] <data> <lang> <src-dir> <align-dir>` for delta-feature GMMs."""
    lang = start_output_dir("align_si.sh", data_dir, lang_dir, src_dir, ali_dir, nj)
    model = GmmModel.read(os.path.join(ali_dir, "final.mdl"), os.path.join(ali_dir, "tree"))
    jobs, skipped, _ = load_jobs(data_dir, lang, nj, read_cmvn_opts(src_dir))
    graphs = compile_graphs(model, lang, jobs, os.path.join(ali_dir, "log"))
    opts = AlignOptions(beam=beam, retry_beam=retry_beam, careful=careful)
    alignments, failed = align_jobs(model, jobs, graphs, opts, boost_silence, lang.ints("optional_silence"),
                                    ali_dir, "align.JOB.log")
    if skipped.count():
        print("align_si.sh: " + "; ".join(skipped.lines()), file=sys.stderr)
    report_failures("align_si.sh", failed, f"{ali_dir}/log/align.*.log")
    return alignments


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="steps/align_si.sh",
                            usage="steps/align_si.sh [options] <data-dir> <lang-dir> <src-dir> <align-dir>",
                            description="Aligns data with a monophone/delta GMM (Kaldi's align_si.sh).")
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; jobs run in-process")
    p.add_argument("--beam", type=float, default=10.0)
    p.add_argument("--retry-beam", type=float, default=40.0)
    p.add_argument("--careful", type=kaldi_bool, default=False)
    p.add_argument("--boost-silence", type=float, default=1.0)
    p.add_argument("--use-graphs", type=kaldi_bool, default=False,
                   help="accepted for compatibility; training graphs are always recompiled")
    p.add_argument("data_dir")
    p.add_argument("lang_dir")
    p.add_argument("src_dir")
    p.add_argument("align_dir")
    a = parse_kaldi_args(p, argv)
    print("steps/align_si.sh " + " ".join(sys.argv[1:] if argv is None else argv), file=sys.stderr)
    try:
        align_si(a.data_dir, a.lang_dir, a.src_dir, a.align_dir, a.nj, a.beam, a.retry_beam, a.careful,
                 a.boost_silence)
    except (OSError, ValueError, KaldiFormatError) as e:
        print(f"steps/align_si.sh: {e}", file=sys.stderr)
        return 1
    print("steps/align_si.sh: done aligning data.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
