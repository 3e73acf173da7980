"""`steps/align_fmllr_lats.sh [options] <data> <lang> <src-dir> <lat-dir>` without Kaldi: lattices
of each training utterance through its own training graph (its transcript), the input of chain
training's supervisions (train.py --lat-dir). Also a command:
`python -m kaldi_avg.frontend.align_lats`.

Kaldi's script (egs/wsj/s5/steps/align_fmllr_lats.sh) per job:
  compile-train-graphs --transition-scale=1.0 --self-loop-scale=0.1 (the scale opts)
  gmm-align-compiled + gmm-est-fmllr                 (a first pass, only for fMLLR)
  gmm-latgen-faster --acoustic-scale=0.1 --beam=$final_beam --lattice-beam=$final_beam
      --allow-partial=false --word-determinize=false   ->  lat.JOB.gz
  [lattice-best-path --acoustic-scale=0.1            ->  ali.JOB.gz, with --generate-ali-from-lats]
Here, per utterance: the training graph (kaldi-hmm-gmm's TrainingGraphCompiler, transition
probabilities added with the scale opts), log-likelihoods of the (gmm-boost-silence'd) GMM,
kaldi-decoder's LatticeSimpleDecoder with beam and lattice beam `--final-beam` (no
max-active: training graphs are small), the raw lattice determinized on phones
(frontend/determinize.py: the best path of each word-and-phone sequence within the beam, as
`--word-determinize=false` keeps it), acoustic costs unscaled, written as a text CompactLattice
archive gzipped (`lat.JOB.gz`; Kaldi's table readers detect text, `ark:gunzip -c lat.1.gz|`).

No fMLLR: kaldi-avg's GMMs are speaker-independent (monophone/delta, no final.alimdl, no
transforms), so the features are the src dir's delta features with its cmvn_opts, the same for
the lattices as for align_si.sh, and the first alignment pass (which only feeds gmm-est-fmllr)
is not run; `--beam`, `--retry-beam` and `--fmllr-update-type` are accepted and unused. An
utterance whose decoding reaches no final state fails (--allow-partial=false), with a warning in
log/generate_lattices.JOB.log, as in Kaldi.

The lattice dir gets what Kaldi's gets: lat.N.gz, num_jobs, final.mdl, tree, phones.txt,
final.occs, cmvn_opts, delta_opts (those that the src dir has), logs under log/.
"""
from __future__ import annotations

import gzip
import math
import os
import shlex
import sys
from dataclasses import dataclass

import kaldi_decoder
import kaldi_hmm_gmm as khg
import numpy as np

from ..atomic import atomic_path
from ..kaldi.binary import KaldiFormatError
from ..kaldi.lattice import write_compact_lattice_text
from ..kaldi.runlog import JobLog
from ..options import KaldiArgumentParser, kaldi_bool
from .cliopts import parse_kaldi_args
from .decode import gmm_log_likelihoods
from .determinize import DeterminizeError, RawLattice, best_path, determinize_lattice_phone, scale_acoustic
from .featpipe import read_cmvn_opts
from .gmm_align import boosted_silence_model, compile_graphs, silence_pdfs, start_output_dir
from .gmm_data import Job, load_jobs, write_alignments
from .gmm_model import GmmModel

PROG = "steps/align_fmllr_lats.sh"


@dataclass(frozen=True)
class LatticeOptions:
    """The options of align_fmllr_lats.sh that shape the lattices."""
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    acoustic_scale: float = 0.1
    final_beam: float = 20.0
    boost_silence: float = 1.0


def parse_scale_opts(text: str) -> tuple[float, float]:
    """`--scale-opts "--transition-scale=1.0 --self-loop-scale=0.1"` (compile-train-graphs')."""
    scales = {"--transition-scale": 1.0, "--self-loop-scale": 0.1}
    words = shlex.split(text)
    i = 0
    while i < len(words):
        name, eq, value = words[i].partition("=")
        if not eq and i + 1 < len(words):
            value = words[i + 1]
            i += 1
        if name not in scales:
            raise ValueError(f"--scale-opts={text!r}: unknown option {name} (only --transition-scale, "
                             "--self-loop-scale)")
        try:
            scales[name] = float(value)
        except ValueError:
            raise ValueError(f"--scale-opts={text!r}: {name} needs a number") from None
        i += 1
    return scales["--transition-scale"], scales["--self-loop-scale"]


def utterance_lattice(model: GmmModel, am: khg.AmDiagGmm, graph, feats: np.ndarray, opts: LatticeOptions):
    """gmm-latgen-faster --allow-partial=false --word-determinize=false on one utterance: the
    phone-determinized CompactLattice with unscaled acoustic costs, or None when no final state
    is reached. `graph` has the transition probabilities in it."""
    tid2pdf = np.asarray(model.khg_trans_model.transition_id_to_pdf_array(), np.int64)
    loglikes = gmm_log_likelihoods(am, feats)
    scaled = np.ascontiguousarray(opts.acoustic_scale * loglikes[:, tid2pdf[1:]], np.float32)
    config = kaldi_decoder.LatticeSimpleDecoderConfig(beam=opts.final_beam, lattice_beam=opts.final_beam)
    decoder = kaldi_decoder.LatticeSimpleDecoder(graph, config)
    decoder.decode(kaldi_decoder.DecodableCtc(scaled, 0))
    if not math.isfinite(decoder.final_relative_cost()):
        return None
    ok, raw = decoder.get_raw_lattice(use_final_probs=True)
    if not ok or raw.num_states == 0:
        return None
    lat = determinize_lattice_phone(RawLattice.from_text(raw.to_str()), model.trans_model, opts.final_beam)
    scale_acoustic(lat, 1.0 / opts.acoustic_scale)
    return lat


def lattice_job(model: GmmModel, am: khg.AmDiagGmm, job: Job, graphs: dict[str, object], opts: LatticeOptions,
                lat_path: str, log: JobLog) -> tuple[dict[str, list[int]], list[str]]:
    """Writes one job's lat.JOB.gz; returns (best-path alignments, utterances that failed)."""
    alignments: dict[str, list[int]] = {}
    failed: list[str] = []
    tot_like = frames = 0.0
    with atomic_path(lat_path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as f:
        for u in job.utts:
            graph = graphs.get(u.id)
            if graph is None:
                continue
            graph = graph.copy()
            khg.add_transition_probs(trans_model=model.khg_trans_model, disambig_syms=[],
                                     transition_scale=opts.transition_scale,
                                     self_loop_scale=opts.self_loop_scale, fst=graph)
            try:
                lat = utterance_lattice(model, am, graph, u.feats, opts)
            except DeterminizeError as e:
                log(f"WARNING (gmm-latgen-faster): {u.id}: {e}")
                lat = None
            if lat is None:
                log(f"WARNING (gmm-latgen-faster): Did not reach a final state for utterance {u.id} "
                    f"(len = {u.feats.shape[0]}); not outputting it (--allow-partial=false)")
                failed.append(u.id)
                continue
            tids, _, weight = best_path(lat, opts.acoustic_scale)
            if len(tids) != u.feats.shape[0]:
                raise DeterminizeError(f"{u.id}: the lattice's best path has {len(tids)} frames, the "
                                       f"features {u.feats.shape[0]}")
            f.write(write_compact_lattice_text(u.id, lat))
            alignments[u.id] = tids
            tot_like -= weight[0] + weight[1] * opts.acoustic_scale
            frames += len(tids)
            log(f"{u.id} {lat.num_states} states, {lat.num_arcs} arcs")
    log(f"LOG (gmm-latgen-faster): Overall log-likelihood per frame is {tot_like / max(frames, 1):.6g} "
        f"over {int(frames)} frames.")
    log(f"LOG (gmm-latgen-faster): Done {len(alignments)} utterances, failed for {len(failed)}")
    return alignments, failed


def align_fmllr_lats(data_dir: str, lang_dir: str, src_dir: str, lat_dir: str, nj: int = 4,
                     opts: LatticeOptions = LatticeOptions(), generate_ali_from_lats: bool = False
                     ) -> tuple[int, list[str]]:
    """The script (module docstring); returns (lattices written, utterances that failed)."""
    lang = start_output_dir(PROG, data_dir, lang_dir, src_dir, lat_dir, nj, required=("L.fst",))
    model = GmmModel.read(os.path.join(lat_dir, "final.mdl"), os.path.join(lat_dir, "tree"))
    jobs, skipped, _ = load_jobs(data_dir, lang, nj, read_cmvn_opts(src_dir))
    graphs = compile_graphs(model, lang, jobs, os.path.join(lat_dir, "log"))
    am = boosted_silence_model(model.am, silence_pdfs(model.khg_trans_model, lang.ints("optional_silence")),
                               opts.boost_silence)
    written, failed = 0, []
    for job in jobs:
        lat_path = os.path.join(lat_dir, f"lat.{job.index}.gz")
        command = (f"gmm-latgen-faster --acoustic-scale={opts.acoustic_scale} --beam={opts.final_beam} "
                   f"--lattice-beam={opts.final_beam} --allow-partial=false --word-determinize=false "
                   f"'gmm-boost-silence --boost={opts.boost_silence} {lang.path('phones/optional_silence.csl')} "
                   f"{src_dir}/final.mdl - |' 'ark:<compile-train-graphs --transition-scale={opts.transition_scale} "
                   f"--self-loop-scale={opts.self_loop_scale}> (job {job.index})' <features> "
                   f"'ark:|gzip -c >{lat_path}'")
        with JobLog(os.path.join(lat_dir, "log", f"generate_lattices.{job.index}.log"), command) as log:
            alignments, job_failed = lattice_job(model, am, job, graphs, opts, lat_path, log)
        written += len(alignments)
        failed += job_failed + [u.id for u in job.utts if u.id not in graphs]
        if generate_ali_from_lats:
            ali_path = os.path.join(lat_dir, f"ali.{job.index}.gz")
            with JobLog(os.path.join(lat_dir, "log", f"generate_alignments.{job.index}.log"),
                        f"lattice-best-path --acoustic-scale={opts.acoustic_scale} 'ark:gunzip -c {lat_path} |' "
                        f"ark:/dev/null 'ark:|gzip -c >{ali_path}'") as log:
                n = write_alignments(ali_path, sorted(alignments.items()))
                log(f"LOG (lattice-best-path): Done {n} lattices, failed for 0")
    if skipped.count():
        print(f"{PROG}: " + "; ".join(skipped.lines()), file=sys.stderr)
    return written, failed


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(
        prog=PROG, usage=f"{PROG} [options] <data-dir> <lang-dir> <src-dir> <lat-dir>",
        description="Lattices of the training transcripts from a speaker-independent GMM (Kaldi's "
                    "align_fmllr_lats.sh without fMLLR); see kaldi_avg/frontend/align_lats.py.")
    p.add_argument("--nj", type=int, default=4)
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; jobs run in-process")
    p.add_argument("--stage", type=int, default=0, help="accepted for compatibility; every step runs")
    p.add_argument("--scale-opts", default="--transition-scale=1.0 --self-loop-scale=0.1")
    p.add_argument("--acoustic-scale", type=float, default=0.1)
    p.add_argument("--beam", type=float, default=10.0, help="unused: Kaldi's fMLLR alignment pass only")
    p.add_argument("--retry-beam", type=float, default=40.0, help="unused: Kaldi's fMLLR alignment pass only")
    p.add_argument("--final-beam", type=float, default=20.0, help="beam and lattice beam of the lattices")
    p.add_argument("--boost-silence", type=float, default=1.0)
    p.add_argument("--fmllr-update-type", default="full", help="unused: no fMLLR (speaker-independent GMMs)")
    p.add_argument("--generate-ali-from-lats", type=kaldi_bool, default=False,
                   help="also write ali.JOB.gz, the lattices' best paths")
    p.add_argument("--max-active", type=int, default=7000,
                   help="accepted; the lattice decoder keeps every token within the beam")
    p.add_argument("data_dir")
    p.add_argument("lang_dir")
    p.add_argument("src_dir")
    p.add_argument("lat_dir")
    a = parse_kaldi_args(p, argv)
    print(f"{PROG} " + shlex.join(sys.argv[1:] if argv is None else argv), file=sys.stderr)
    try:
        if a.nj < 1:
            raise ValueError(f"--nj={a.nj} must be >= 1")
        if a.acoustic_scale <= 0 or a.final_beam <= 0:
            raise ValueError("--acoustic-scale and --final-beam must be > 0")
        ts, sls = parse_scale_opts(a.scale_opts)
        opts = LatticeOptions(ts, sls, a.acoustic_scale, a.final_beam, a.boost_silence)
        written, failed = align_fmllr_lats(a.data_dir, a.lang_dir, a.src_dir, a.lat_dir, a.nj, opts,
                                           a.generate_ali_from_lats)
    except (OSError, ValueError, KaldiFormatError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    if failed:
        print(f"{PROG}: {len(failed)} utterance(s) got no lattice (listed in "
              f"{a.lat_dir}/log/generate_lattices.*.log)", file=sys.stderr)
    if not written:
        print(f"{PROG}: no lattice was written", file=sys.stderr)
        return 1
    print(f"{PROG}: done generating lattices from training transcripts ({written} utterances; "
          "speaker-independent, no fMLLR).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
