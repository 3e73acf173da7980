"""`steps/decode.sh` (GMM) and `steps/nnet3/decode.sh` with Kaldi's signatures and outputs.

Both: the model dir is the parent of the decode dir (`$srcdir/$iter.mdl`, tree, cmvn_opts),
the data is split into `<data>/split<nj>`, job JOB writes `lat.JOB.gz` and `log/decode.JOB.log`
(hypotheses and per-utterance log-likelihoods, as latgen prints them), then `local/score.sh`
scoring unless --skip-scoring.  `hyp.txt` (all best paths as words) is written too.
The jobs run one after another in this process (`--cmd` is accepted and not needed).

nnet3: features get `apply-cmvn $cmvn_opts` (absent cmvn_opts -> no normalisation, as
decode.sh), network outputs come from `kaldi-avg compute --use-priors=true ...` (log-softmax
minus log priors; a chain model's raw output, its priors being empty), and the decoder reads them
as latgen-faster-mapped does.  With --online-ivector-dir, compute gets
`--online-ivectors=scp:<dir>/ivector_online.scp --online-ivector-period=<dir>/ivector_period`.
Chain models (docs/kaldi-formats.md 7.1): `<model-dir>/frame_subsampling_factor` (else
`frame_subsampling_factor` in `<model-dir>/init/info.txt`) gives compute
`--frame-subsampling-factor`, and --post-decode-acwt != 1.0 scales the acoustic costs of the
lattices written to lat.JOB.gz (decode.sh's `lattice-scale --acoustic-scale=$post_decode_acwt`);
chain recipes decode with `--acwt 1.0 --post-decode-acwt 10.0`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from ..atomic import write_lines
from ..kaldi.binary import KaldiFormatError
from ..kaldi.datadir import DataDir, split_data
from ..kaldi.runlog import JobLog
from ..kaldi.tables import read_matrix_table, write_matrix_table
from ..kaldi.transition import read_transition_model
from ..model.compute import ChunkOptions
from ..options import KaldiArgumentParser, kaldi_bool
from .cliopts import parse_kaldi_args
from .decode import DecodeOptions, Hypothesis, MappedDecoder, gmm_log_likelihoods
from .featpipe import NO_CMVN, FeatureError, SkipReport, feature_loader, read_cmvn_opts, usable_utterances
from .gmm_model import GmmModel
from .graph import load_graph
from .hmm import read_tree, to_khg
from .lang import read_symbol_table
from .lattice import LatticeError, write_lattice_archive
from .score import score_kaldi


class DecodeError(RuntimeError):
    """A decoding stage failed; names the file or job."""


@dataclass(frozen=True)
class ComputeOptions:
    """The nnet3 options of steps/nnet3/decode.sh, forwarded to `kaldi-avg compute`: its chunking
    and, with --online-ivector-dir, the i-vector rspecifier (the period is in `chunk`; so is the
    frame subsampling factor, passed when it is not 1)."""
    chunk: ChunkOptions = ChunkOptions()
    online_ivectors: str = ""

    def args(self) -> list[str]:
        c = self.chunk
        ivector_opts = ([f"--online-ivectors={self.online_ivectors}",
                         f"--online-ivector-period={c.online_ivector_period}"] if self.online_ivectors else [])
        subsampling_opt = ([f"--frame-subsampling-factor={c.frame_subsampling_factor}"]
                           if c.frame_subsampling_factor != 1 else [])
        return ivector_opts + subsampling_opt + [
            f"--frames-per-chunk={c.frames_per_chunk}", f"--extra-left-context={c.extra_left_context}",
            f"--extra-right-context={c.extra_right_context}",
            f"--extra-left-context-initial={c.extra_left_context_initial}",
            f"--extra-right-context-final={c.extra_right_context_final}"]


def _check_phones(graph_dir: str, src_dir: str) -> None:
    """utils/lang/check_phones_compatible.sh (silently fine when either file is missing)."""
    a, b = os.path.join(graph_dir, "phones.txt"), os.path.join(src_dir, "phones.txt")
    if os.path.isfile(a) and os.path.isfile(b) and read_symbol_table(a) != read_symbol_table(b):
        raise DecodeError(f"phone symbol tables {a} and {b} are not compatible")


def _ivector_id(directory: str) -> str | None:
    """steps/nnet2/get_ivector_id.sh: final.ie.id, else the md5 of final.ie, else none."""
    id_file, extractor = os.path.join(directory, "final.ie.id"), os.path.join(directory, "final.ie")
    if os.path.isfile(id_file):
        with open(id_file, encoding="utf-8") as f:
            return f.read().strip()
    if os.path.isfile(extractor):
        with open(extractor, "rb") as f:
            return hashlib.md5(f.read()).hexdigest()
    return None


def _online_ivectors(src_dir: str, ivector_dir: str, compute: ComputeOptions) -> ComputeOptions:
    """`compute` with decode.sh's ivector_opts for --online-ivector-dir, after
    steps/nnet2/check_ivectors_compatible.sh (the extractor ids of both dirs agree where both have one)."""
    ids = _ivector_id(src_dir), _ivector_id(ivector_dir)
    if None not in ids and ids[0] != ids[1]:
        raise DecodeError(f"decode: iVector id {ids[0]} in {src_dir} and the iVector id {ids[1]} in {ivector_dir} "
                          "do not match: the systems are not compatible")
    if None in ids:
        print(f"decode: WARNING: {src_dir} or {ivector_dir} has no iVector id (final.ie.id): keeping them "
              "compatible is up to you", file=sys.stderr)
    scp, period_file = os.path.join(ivector_dir, "ivector_online.scp"), os.path.join(ivector_dir, "ivector_period")
    for f in (scp, period_file):
        if not os.path.isfile(f):
            raise DecodeError(f"decode: no such file {f}")
    with open(period_file, encoding="utf-8") as f:
        text = f.read().strip()
    if not text.isdigit() or int(text) == 0:
        raise DecodeError(f"{period_file}: expected a positive number of frames, got {text!r}")
    return ComputeOptions(dataclasses.replace(compute.chunk, online_ivector_period=int(text)), f"scp:{scp}")


def frame_subsampling_factor(src_dir: str) -> int | None:
    """decode.sh's frame_subsampling_opt: `<src_dir>/frame_subsampling_factor`, else the
    `frame_subsampling_factor N` line of `<src_dir>/init/info.txt`; None when neither says."""
    path = os.path.join(src_dir, "frame_subsampling_factor")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    else:
        path = os.path.join(src_dir, "init", "info.txt")
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            found = [line.split() for line in f if line.startswith("frame_subsampling_factor")]
        if not found or len(found[0]) < 2:
            return None
        text = found[0][1]
    if not text.isdigit() or int(text) == 0:
        raise DecodeError(f"{path}: expected a positive frame subsampling factor, got {text!r}")
    return int(text)


def _decode_job(decoder: MappedDecoder, loglikes: Iterable[tuple[str, np.ndarray]], words: dict[int, str],
                decode_dir: str, job: int, command: str, skipped: SkipReport) -> list[Hypothesis]:
    hyps: list[Hypothesis] = []
    lattices: list[tuple[str, str]] = []
    failed: list[str] = []
    with JobLog(os.path.join(decode_dir, "log", f"decode.{job}.log"), command) as log:
        for line in skipped.lines():
            log(f"WARNING: {line}")
        tot_like = frames = partial = widened = 0
        for utt, ll in loglikes:
            hyp, lattice = decoder.decode(utt, ll)
            if hyp is None:
                log(f"WARNING: Did not successfully decode utterance {utt}, len = {ll.shape[0]}")
                failed.append(utt)
                continue
            if hyp.partial:
                log(f"WARNING: Outputting partial output for utterance {utt} since no final-state reached")
                partial += 1
            if hyp.lattice_beam_search:
                log(f"LOG: lattice search for utterance {utt} at beam {hyp.lattice_beam_search:g}, so that the "
                    "lattice holds the decoder's best path")
                widened += 1
            log(f"{utt} {' '.join(words.get(w, str(w)) for w in hyp.word_ids)}")
            log(f"LOG: Log-like per frame for utterance {utt} is {hyp.log_like / max(hyp.num_frames, 1):.6g} "
                f"over {hyp.num_frames} frames.")
            hyps.append(hyp)
            lattices.append((utt, lattice))
            tot_like += hyp.log_like
            frames += hyp.num_frames
        log(f"LOG: Overall log-likelihood per frame is {tot_like / max(frames, 1):.6g} over {frames} frames.")
        log(f"LOG: Done {len(hyps)} utterances ({partial} partial), failed for {len(failed)}"
            + (f"; {widened} lattice search(es) widened" if widened else ""))
        if failed:
            log("Utterances that failed to decode: " + " ".join(failed))
    write_lattice_archive(os.path.join(decode_dir, f"lat.{job}.gz"), lattices)
    if failed or skipped.count():
        print(f"decode: job {job}: {len(failed)} utterance(s) failed to decode, {skipped.count()} skipped "
              f"(listed in {decode_dir}/log/decode.{job}.log)", file=sys.stderr)
    return hyps


def _finish(hyps: list[Hypothesis], words: dict[int, str], data_dir: str, graph_dir: str, decode_dir: str,
            nj: int, skip_scoring: bool, scoring_opts: dict) -> None:
    write_lines(os.path.join(decode_dir, "hyp.txt"), _hyp_lines(hyps, words))
    write_lines(os.path.join(decode_dir, "num_jobs"), [str(nj)])
    if not skip_scoring:
        score_kaldi(data_dir, graph_dir, decode_dir, **scoring_opts)
        with open(os.path.join(decode_dir, "scoring_kaldi", "best_wer"), encoding="utf-8") as f:
            print(f.read().strip(), file=sys.stderr)


def _setup(graph_dir: str, data_dir: str, decode_dir: str, nj: int, iteration: str, model: str | None):
    src_dir = os.path.dirname(os.path.abspath(decode_dir.rstrip("/")))
    model = model or os.path.join(src_dir, f"{iteration}.mdl")
    for f in (model, os.path.join(graph_dir, "HCLG.fst"), os.path.join(graph_dir, "words.txt"),
              os.path.join(data_dir, "feats.scp")):
        if not os.path.isfile(f):
            raise DecodeError(f"decode: expected file {f} to exist")
    tree = os.path.join(src_dir, "tree")
    if not os.path.isfile(tree):
        raise DecodeError(f"decode: expected {tree} (the decoder needs it to rebuild the transition model)")
    _check_phones(graph_dir, src_dir)
    os.makedirs(os.path.join(decode_dir, "log"), exist_ok=True)
    words = {i: w for w, i in read_symbol_table(os.path.join(graph_dir, "words.txt")).items()}
    return src_dir, model, tree, words, split_data(DataDir(data_dir), nj)


def decode_gmm(graph_dir: str, data_dir: str, decode_dir: str, opts: DecodeOptions, nj: int = 4,
               iteration: str = "final", model: str | None = None, skip_scoring: bool = False,
               scoring_opts: dict | None = None) -> list[Hypothesis]:
    """steps/decode.sh: gmm-latgen-faster on apply-cmvn + add-deltas features."""
    src_dir, model, tree, words, parts = _setup(graph_dir, data_dir, decode_dir, nj, iteration, model)
    gmm = GmmModel.read(model, tree)
    decoder = MappedDecoder(load_graph(graph_dir), gmm.khg_trans_model, opts)
    cmvn_opts = read_cmvn_opts(src_dir)
    hyps: list[Hypothesis] = []
    for job, part in enumerate(tqdm(parts, desc="decode", unit="job", file=sys.stderr), 1):
        load = feature_loader(part, cmvn_opts, deltas=True)
        skipped = SkipReport()
        loglikes = ((utt, gmm_log_likelihoods(gmm.am, load(utt))) for utt in usable_utterances(part, skipped))
        hyps += _decode_job(decoder, loglikes, words, decode_dir, job,
                            f"gmm-latgen-faster --max-active={opts.max_active} --beam={opts.beam} "
                            f"--lattice-beam={opts.lattice_beam} --acoustic-scale={opts.acoustic_scale} "
                            f"--allow-partial={str(opts.allow_partial).lower()} {model} {graph_dir}/HCLG.fst "
                            f"<apply-cmvn {cmvn_opts} | add-deltas on {part.path}>", skipped)
    _finish(hyps, words, data_dir, graph_dir, decode_dir, nj, skip_scoring, scoring_opts or {})
    return hyps


def decode_loglikes(graph_dir: str, model: str, loglikes_rspecifier: str, decode_dir: str, opts: DecodeOptions,
                    job: int = 1, tree: str | None = None) -> list[Hypothesis]:
    """latgen-faster-mapped: decodes an archive of (T, num_pdfs) log-likelihoods (e.g. network
    log-softmax minus log priors) with the transition model of `model` (its tree defaults to
    `tree` beside it); writes lat.<job>.gz, log/decode.<job>.log and hyp.txt into `decode_dir`."""
    tree = tree or os.path.join(os.path.dirname(os.path.abspath(model)), "tree")
    for f in (model, tree, os.path.join(graph_dir, "words.txt")):
        if not os.path.isfile(f):
            raise DecodeError(f"decode: expected file {f} to exist")
    os.makedirs(os.path.join(decode_dir, "log"), exist_ok=True)
    decoder = _mapped_decoder(graph_dir, model, tree, opts)
    words = {i: w for w, i in read_symbol_table(os.path.join(graph_dir, "words.txt")).items()}
    hyps = _decode_job(decoder, read_matrix_table(loglikes_rspecifier), words, decode_dir, job,
                       f"latgen-faster-mapped --max-active={opts.max_active} --min-active={opts.min_active} "
                       f"--beam={opts.beam} --lattice-beam={opts.lattice_beam} "
                       f"--acoustic-scale={opts.acoustic_scale} {model} {graph_dir}/HCLG.fst {loglikes_rspecifier}",
                       SkipReport())
    write_lines(os.path.join(decode_dir, "hyp.txt"), _hyp_lines(hyps, words))
    return hyps


def _mapped_decoder(graph_dir: str, model: str, tree: str, opts: DecodeOptions,
                    post_decode_acwt: float = 1.0) -> MappedDecoder:
    """A decoder for any `.mdl` (GMM or nnet3): only its transition model is used."""
    return MappedDecoder(load_graph(graph_dir), to_khg(read_transition_model(model), read_tree(tree), source=model),
                         opts, post_decode_acwt)


def _hyp_lines(hyps: list[Hypothesis], words: dict[int, str]) -> list[str]:
    return [f"{h.utt} {' '.join(words.get(w, str(w)) for w in h.word_ids)}".rstrip()
            for h in sorted(hyps, key=lambda h: h.utt)]


def kaldi_avg_command() -> list[str]:
    """The `kaldi-avg` program: next to this Python (the venv), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "kaldi-avg")
    found = beside if os.path.isfile(beside) else shutil.which("kaldi-avg")
    if found is None:
        raise DecodeError("kaldi-avg is not installed (pip install -e . in the venv)")
    return [found]


def compute_loglikes(model: str, feats: Iterable[tuple[str, np.ndarray]], work: str, opts: ComputeOptions,
                     log: Callable[[str], None]) -> Iterable[tuple[str, np.ndarray]]:
    """`kaldi-avg compute --use-priors=true` on the features; yields (utt, log-likelihoods)."""
    feats_ark, out_ark = f"{work}.feats.ark", f"{work}.loglikes.ark"
    try:
        write_matrix_table(f"ark:{feats_ark}", feats)
        cmd = kaldi_avg_command() + ["compute", "--use-priors=true", *opts.args(), model, f"ark:{feats_ark}",
                                     f"ark:{out_ark}"]
        log(" ".join(shlex.quote(c) for c in cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in proc.stderr.splitlines():
            log(line)
        if proc.returncode != 0:
            raise DecodeError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        yield from read_matrix_table(f"ark:{out_ark}")
    finally:
        for f in (feats_ark, out_ark):
            if os.path.exists(f):
                os.unlink(f)


def decode_nnet3(graph_dir: str, data_dir: str, decode_dir: str, opts: DecodeOptions, nj: int = 4,
                 compute: ComputeOptions = ComputeOptions(), iteration: str = "final", skip_scoring: bool = False,
                 scoring_opts: dict | None = None, online_ivector_dir: str | None = None,
                 post_decode_acwt: float = 1.0) -> list[Hypothesis]:
    """steps/nnet3/decode.sh: nnet3-latgen-faster with the outputs of `kaldi-avg compute`; the
    lattices' acoustic costs times `post_decode_acwt` (--post-decode-acwt)."""
    src_dir, model, tree, words, parts = _setup(graph_dir, data_dir, decode_dir, nj, iteration, None)
    if online_ivector_dir:
        compute = _online_ivectors(src_dir, online_ivector_dir, compute)
    if os.path.isfile(os.path.join(src_dir, "online_cmvn")):
        raise DecodeError(f"{src_dir}/online_cmvn: online CMVN is not supported by this decoder")
    subsampling = frame_subsampling_factor(src_dir)
    if subsampling is not None:
        compute = dataclasses.replace(compute, chunk=dataclasses.replace(compute.chunk,
                                                                         frame_subsampling_factor=subsampling))
    decoder = _mapped_decoder(graph_dir, model, tree, opts, post_decode_acwt)
    lattice_scale = (f" | lattice-scale --acoustic-scale={post_decode_acwt:g}" if post_decode_acwt != 1.0 else "")
    cmvn_opts = read_cmvn_opts(src_dir, default=NO_CMVN)
    hyps: list[Hypothesis] = []
    for job, part in enumerate(tqdm(parts, desc="decode", unit="job", file=sys.stderr), 1):
        load = feature_loader(part, cmvn_opts, deltas=False)
        skipped = SkipReport()
        feats = ((utt, load(utt)) for utt in usable_utterances(part, skipped))
        with JobLog(os.path.join(decode_dir, "log", f"compute.{job}.log"),
                    f"apply-cmvn {cmvn_opts} | kaldi-avg compute (job {job})") as log:
            loglikes = list(compute_loglikes(model, feats, os.path.join(decode_dir, f".job{job}"), compute, log))
        hyps += _decode_job(decoder, loglikes, words, decode_dir, job,
                            f"nnet3-latgen-faster {' '.join(compute.args())} --max-active={opts.max_active} "
                            f"--min-active={opts.min_active} --beam={opts.beam} --lattice-beam={opts.lattice_beam} "
                            f"--acoustic-scale={opts.acoustic_scale} --allow-partial=true {model} "
                            f"{graph_dir}/HCLG.fst <apply-cmvn {cmvn_opts} on {part.path}>{lattice_scale}", skipped)
    _finish(hyps, words, data_dir, graph_dir, decode_dir, nj, skip_scoring, scoring_opts or {})
    return hyps


def _scoring_opts(text: str) -> dict:
    """--scoring-opts of decode.sh: local/score.sh's --min-lmwt/--max-lmwt/--word-ins-penalty."""
    p = KaldiArgumentParser(prog="--scoring-opts", add_help=False)
    p.add_argument("--min-lmwt", type=int, default=7)
    p.add_argument("--max-lmwt", type=int, default=17)
    p.add_argument("--word-ins-penalty", default="0.0,0.5,1.0")
    a = parse_kaldi_args(p, shlex.split(text))
    return {"min_lmwt": a.min_lmwt, "max_lmwt": a.max_lmwt,
            "word_ins_penalties": tuple(float(x) for x in a.word_ins_penalty.split(","))}


def _common_options(p: KaldiArgumentParser, beam: float, lattice_beam: float, acwt: float) -> None:
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; jobs run in-process")
    p.add_argument("--acwt", type=float, default=acwt)
    p.add_argument("--beam", type=float, default=beam)
    p.add_argument("--lattice-beam", type=float, default=lattice_beam)
    p.add_argument("--max-active", type=int, default=7000)
    p.add_argument("--min-active", type=int, default=200)
    p.add_argument("--iter", default="final")
    p.add_argument("--scoring-opts", default="")
    p.add_argument("--skip-scoring", type=kaldi_bool, default=False)
    p.add_argument("--stage", type=int, default=0, help="accepted for compatibility")
    p.add_argument("graph_dir")
    p.add_argument("data_dir")
    p.add_argument("decode_dir")


def _run(prog: str, argv: list[str] | None, work) -> int:
    print(prog + " " + " ".join(sys.argv[1:] if argv is None else argv), file=sys.stderr)
    try:
        work()
    except (OSError, ValueError, RuntimeError, KaldiFormatError, FeatureError, LatticeError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0


def main_gmm(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="steps/decode.sh",
                            usage="steps/decode.sh [options] <graph-dir> <data-dir> <decode-dir>",
                            description="Decodes with the GMM model in the parent of <decode-dir> (Kaldi's "
                                        "steps/decode.sh).")
    _common_options(p, beam=13.0, lattice_beam=6.0, acwt=0.083333)
    p.add_argument("--model", default=None, help="model to decode with (default: <decode-dir>/../<iter>.mdl)")
    a = parse_kaldi_args(p, argv)
    opts = DecodeOptions(a.acwt, a.beam, a.lattice_beam, a.max_active, a.min_active)
    return _run(p.prog, argv, lambda: decode_gmm(a.graph_dir, a.data_dir, a.decode_dir, opts, a.nj, a.iter,
                                                 a.model, a.skip_scoring, _scoring_opts(a.scoring_opts)))


def main_nnet3(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="steps/nnet3/decode.sh",
                            usage="steps/nnet3/decode.sh [options] <graph-dir> <data-dir> <decode-dir>",
                            description="Decodes with the nnet3 model in the parent of <decode-dir> (Kaldi's "
                                        "steps/nnet3/decode.sh; network outputs from kaldi-avg compute).")
    _common_options(p, beam=15.0, lattice_beam=8.0, acwt=0.1)
    p.add_argument("--frames-per-chunk", type=int, default=50)
    p.add_argument("--extra-left-context", type=int, default=0)
    p.add_argument("--extra-right-context", type=int, default=0)
    p.add_argument("--extra-left-context-initial", type=int, default=-1)
    p.add_argument("--extra-right-context-final", type=int, default=-1)
    p.add_argument("--online-ivector-dir", default="")
    p.add_argument("--post-decode-acwt", type=float, default=1.0,
                   help="scale the lattices' acoustic costs by this (lattice-scale; chain: 10.0 with --acwt 1.0)")
    p.add_argument("--num-threads", type=int, default=1, help="accepted for compatibility")
    p.add_argument("--use-gpu", default="false", help="accepted for compatibility")
    p.add_argument("--skip-diagnostics", default="false", help="accepted for compatibility")
    p.add_argument("--minimize", default="false", help="accepted for compatibility")
    a = parse_kaldi_args(p, argv)
    opts = DecodeOptions(a.acwt, a.beam, a.lattice_beam, a.max_active, a.min_active)
    compute = ComputeOptions(ChunkOptions(a.frames_per_chunk, a.extra_left_context, a.extra_right_context,
                                          a.extra_left_context_initial, a.extra_right_context_final))
    return _run(p.prog, argv, lambda: decode_nnet3(a.graph_dir, a.data_dir, a.decode_dir, opts, a.nj, compute,
                                                   a.iter, a.skip_scoring, _scoring_opts(a.scoring_opts),
                                                   a.online_ivector_dir, a.post_decode_acwt))


def main_mapped(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="latgen-faster-mapped",
                            usage="python -m kaldi_avg.frontend.decode_steps mapped [options] <model> <graph-dir> "
                                  "<loglikes-rspecifier> <decode-dir>",
                            description="Decodes an archive of (frames x pdfs) log-likelihoods with the transition "
                                        "model of <model> (tree beside it, or --tree); writes lat.JOB.gz and hyp.txt.")
    p.add_argument("--acoustic-scale", type=float, default=0.1)
    p.add_argument("--beam", type=float, default=16.0)
    p.add_argument("--lattice-beam", type=float, default=10.0)
    p.add_argument("--max-active", type=int, default=2147483647)
    p.add_argument("--min-active", type=int, default=200)
    p.add_argument("--allow-partial", type=kaldi_bool, default=False)
    p.add_argument("--job", type=int, default=1, help="JOB number in the output names")
    p.add_argument("--tree", default=None)
    p.add_argument("model")
    p.add_argument("graph_dir")
    p.add_argument("loglikes_rspecifier")
    p.add_argument("decode_dir")
    a = parse_kaldi_args(p, argv)
    opts = DecodeOptions(a.acoustic_scale, a.beam, a.lattice_beam, a.max_active, a.min_active, a.allow_partial)
    return _run(p.prog, argv, lambda: decode_loglikes(a.graph_dir, a.model, a.loglikes_rspecifier, a.decode_dir,
                                                      opts, a.job, a.tree))


if __name__ == "__main__":
    commands = {"gmm": main_gmm, "nnet3": main_nnet3, "mapped": main_mapped}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print("usage: python -m kaldi_avg.frontend.decode_steps (gmm|nnet3|mapped) [options] ...", file=sys.stderr)
        sys.exit(1)
    sys.exit(commands[sys.argv[1]](sys.argv[2:]))
