"""`python -m kaldi_avg.chain.prepare`: a chain directory from a GMM system, in one command
(docs/chain.md 8).

    python -m kaldi_avg.chain.prepare [options] <lang-dir> <ali-dir> <data-dir> <chain-dir>

The steps of Kaldi's chain recipes (e.g. egs/mini_librispeech/s5/local/chain/tuning/run_tdnn_1j.sh
with steps/nnet3/chain/build_tree.sh, train.py and get_egs.sh), each a stage, logs under
<chain-dir>/log/ as run.pl writes them, every file written atomically:

0. `<chain-dir>/lang`: a copy of <lang-dir> whose `topo` is `steps/nnet3/chain/gen_topo.py
   $(cat phones/nonsilence.csl) $(cat phones/silence.csl)` (log/gen_topo.log).
1. The tree directory (build_tree.sh --frame-subsampling-factor F) in <chain-dir>: `tree`,
   `0.trans_mdl`, `ali.N.gz` (<ali-dir>'s alignments, `convert-ali --frame-subsampling-factor=F`,
   one archive per alignment job), `num_jobs`, `topo`, `phones.txt`, `frame_subsampling_factor`,
   `final.mdl` (log/build_tree.log, log/convert_ali.N.log). Unlike Kaldi's, the tree is a monophone one
   (two pdfs per phone, or per set of phones/sets.int with --shared-phones=true, as gmm-init-mono
   makes it): without Kaldi's binaries no context-dependent tree can be built (kaldi-hmm-gmm has
   none of acc-tree-stats, cluster-phones or build-tree; docs/chain.md 6.4). `final.mdl` is the
   chain transition model alone (the bytes of 0.trans_mdl): Kaldi's is a GMM of the chain topology
   (gmm-init-model), but what reads it afterwards (train.py's `ali-to-phones` and
   `copy-transition-model`, mkgraph.sh, our readers) reads only the transition model at its start.
   (`steps/nnet3/chain/build_tree.sh`, kaldi_avg/chain/build_tree.py, is this stage alone.)
2. `phone_lm.fst`: `ali-to-phones 0.trans_mdl ark:ali.*.gz ark:- | chain-est-phone-lm <lm-opts>`
   as train.py runs it (log/make_phone_lm.log).
3. `den.fst`, `normalization.fst`: `chain-make-den-fst tree 0.trans_mdl phone_lm.fst`
   (log/make_den_fst.log).
4. `supervision.N.ark` (text `Supervision` archives, `ark,t:`) and `num_supervision_jobs`, for the utterances of
   <data-dir> that <ali-dir> aligned: `ali-to-phones --write-lengths <ali-dir>/final.mdl
   ark:<ali-dir>/ali.N.gz ark:- | chain-get-supervision --left-tolerance=L --right-tolerance=R
   --frame-subsampling-factor=F tree 0.trans_mdl ark:- ark,t:supervision.N.ark`; with --lat-dir,
   from its lattices as get_egs.sh does (`lattice-align-phones --replace-output-symbols=true
   <lat-dir>/final.mdl ark:<lat-dir>/lat.N.gz ark:- | chain-get-supervision --lattice-input=true
   ...`), one archive per lattice job (log/get_supervision.N.log). Utterances whose supervision
   fails (as Kaldi, with a count in the log), and those whose supervision length is not
   (frames + F - 1) / F of the data dir's features within one frame (nnet3-chain-get-egs would
   drop them), are left out.

A problem with the options or inputs is one line on stderr and exit status 1.
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..atomic import atomic_path, copy_file, copy_tree, write_text
from ..errors import UsageError
from ..kaldi.runlog import JobLog
from ..options import KaldiArgumentParser, kaldi_bool
from .phone_lm import LanguageModelEstimator, LanguageModelOptions, PhoneLmError

PROG = "python -m kaldi_avg.chain.prepare"
STAGES = ("gen_topo", "tree", "phone_lm", "den_fst", "supervision")


class PrepareError(UsageError):
    """The inputs of `prepare` do not make a chain directory (one line naming the file)."""


@dataclass(frozen=True)
class PrepareOptions:
    frame_subsampling_factor: int = 3
    left_tolerance: int = 5
    right_tolerance: int = 5
    lm_scale: float = 0.0
    lm_opts: LanguageModelOptions = field(default_factory=LanguageModelOptions)
    lm_opts_text: str = ""
    shared_phones: bool = True
    lat_dir: str | None = None
    stage: int = 0
    supervision_length_tolerance: int = 1   # nnet3-chain-get-egs --supervision-length-tolerance
    repeat_frames: bool = False             # convert-ali --repeat-frames (build_tree.sh's option)


@dataclass
class PrepareSummary:
    """What was made (for the caller's message and the tests)."""
    num_pdfs: int = 0
    converted: int = 0
    convert_failed: int = 0
    phone_lm_states: int = 0
    den_states: int = 0
    den_arcs: int = 0
    supervisions: int = 0
    supervision_failed: int = 0
    no_input: int = 0            # data-dir utterances without an alignment (lattice)
    length_mismatch: int = 0
    supervision_archives: list[str] = field(default_factory=list)
    first_failure: str = ""      # the first utterance whose supervision failed: "<archive>: <why>"


def parse_lm_opts(text: str) -> LanguageModelOptions:
    """`--lm-opts` (train.py's --chain.lm-opts): chain-est-phone-lm's options, as one string."""
    defaults = LanguageModelOptions()

    class _Parser(KaldiArgumentParser):
        def error(self, message):
            raise PrepareError(f"--lm-opts={text!r}: {message}")

    p = _Parser(prog="chain-est-phone-lm", add_help=False)
    p.add_argument("--ngram-order", type=int, default=defaults.ngram_order)
    p.add_argument("--num-extra-lm-states", type=int, default=defaults.num_extra_lm_states)
    p.add_argument("--no-prune-ngram-order", type=int, default=defaults.no_prune_ngram_order)
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise PrepareError(f"--lm-opts={text!r}: {e}") from None
    a = p.parse_args(words)
    try:
        return LanguageModelOptions(a.ngram_order, a.num_extra_lm_states, a.no_prune_ngram_order)
    except PhoneLmError as e:
        raise PrepareError(f"--lm-opts={text!r}: {e}") from None


def _need(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise PrepareError(f"{path}: missing ({what})")
    return path


def lang_phones(lang_dir: str) -> tuple[list[int], list[int], list[list[int]]]:
    from ..frontend.lang import LangError, read_int_list
    try:
        sil = read_int_list(_need(os.path.join(lang_dir, "phones", "silence.csl"), "the lang dir's silence phones"))
        nonsil = read_int_list(_need(os.path.join(lang_dir, "phones", "nonsilence.csl"),
                                     "the lang dir's nonsilence phones"))
        sets_path = os.path.join(lang_dir, "phones", "sets.int")
        sets = []
        if os.path.isfile(sets_path):
            with open(sets_path) as f:
                sets = [[int(x) for x in line.split()] for line in f if line.strip()]
    except (LangError, ValueError) as e:
        raise PrepareError(str(e)) from None
    if not sil or not nonsil:
        raise PrepareError(f"{lang_dir}/phones: silence.csl and nonsilence.csl must both list phones")
    return nonsil, sil, sets


def _job_archives(directory: str, prefix: str) -> list[str]:
    """`<dir>/<prefix>.{1..N}.gz` for N in `<dir>/num_jobs`."""
    if prefix == "ali":
        from ..kaldi.alignment import alignment_archives
        return alignment_archives(directory)
    nj_path = _need(os.path.join(directory, "num_jobs"), "the number of jobs")
    text = open(nj_path).read().strip()
    if not text.isdigit() or int(text) < 1:
        raise PrepareError(f"{nj_path}: expected a positive integer, got {text!r}")
    paths = [os.path.join(directory, f"{prefix}.{j}.gz") for j in range(1, int(text) + 1)]
    for p in paths:
        _need(p, f"one of the {len(paths)} archives that {nj_path} announces")
    return paths


@contextmanager
def _logged_warnings(log: JobLog) -> Iterator[None]:
    """The warnings kaldi_avg.chain logs while a step runs (e.g. chain-make-den-fst's "Pdf-id N is
    not seen in denominator graph") go into its log file too, as Kaldi's programs' do."""
    class _Handler(logging.Handler):
        def emit(self, record):
            log(f"{record.levelname} ({record.name}) {record.getMessage()}")
    handler = _Handler(logging.WARNING)
    logger = logging.getLogger("kaldi_avg.chain")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _fst_size(fst) -> tuple[int, int]:
    return fst.num_states, sum(fst.num_arcs(s) for s in range(fst.num_states))


def _write_fst(fst, path: str) -> None:
    from .den_graph import write_fst
    with atomic_path(path) as tmp:
        write_fst(fst, tmp)


def stage_gen_topo(lang_dir: str, chain_dir: str) -> None:
    """Stage 0: <chain-dir>/lang = <lang-dir> with gen_topo.py's topology."""
    from .topology import gen_topo
    nonsil, sil, _ = lang_phones(lang_dir)
    out = os.path.join(chain_dir, "lang")
    command = (f"cp -r {lang_dir} {out}; steps/nnet3/chain/gen_topo.py {':'.join(map(str, nonsil))} "
               f"{':'.join(map(str, sil))} > {out}/topo")
    with JobLog(os.path.join(chain_dir, "log", "gen_topo.log"), command) as log:
        copy_tree(lang_dir, out, skip=("topo",))
        write_text(os.path.join(out, "topo"), gen_topo(nonsil, sil))
        log(f"{out}/topo: the chain topology for {len(sil)} silence and {len(nonsil)} nonsilence phones")


def stage_tree(lang_dir: str, ali_dir: str, chain_dir: str, opts: PrepareOptions, summary: PrepareSummary) -> None:
    """Stage 1: the monophone chain tree, its transition model, the converted alignments."""
    from ..kaldi.alignment import read_transition_ids
    from ..kaldi.transition import read_transition_model
    from .topology import convert_alignment, monophone_chain_tree, write_chain_tree_dir
    nonsil, sil, sets = lang_phones(lang_dir)
    f = opts.frame_subsampling_factor
    gmm_mdl = _need(os.path.join(ali_dir, "final.mdl"), "the alignments' model")
    gmm_tm = read_transition_model(gmm_mdl)
    shared = sets if opts.shared_phones and sets else None
    gmm_phones = set(gmm_tm.topology.phones)
    if gmm_phones != set(nonsil) | set(sil):
        raise PrepareError(f"{gmm_mdl}: its phones are not the lang dir's {lang_dir}/phones/{{silence,nonsilence}}.csl")
    with JobLog(os.path.join(chain_dir, "log", "build_tree.log"),
                f"build_tree.sh --frame-subsampling-factor {f} {lang_dir} {ali_dir} {chain_dir} "
                "(pip-only: monophone tree)") as log:
        tree, tm = monophone_chain_tree(nonsil, sil, shared)
        log(f"monophone tree for the chain topology ({'phones/sets.int shared' if shared else 'no shared phones'}): "
            f"{tree.num_pdfs} pdfs, {tm.num_transition_ids} transition-ids; a context-dependent tree needs "
            "Kaldi's build-tree (not available pip-only)")
    converted = []
    for j, archive in enumerate(_job_archives(ali_dir, "ali"), start=1):
        out_ali = os.path.join(chain_dir, f"ali.{j}.gz")
        with JobLog(os.path.join(chain_dir, "log", f"convert_ali.{j}.log"),
                    f"convert-ali --frame-subsampling-factor={f}"
                    + (" --repeat-frames=true" if opts.repeat_frames else "") + f" {gmm_mdl} {chain_dir}/0.trans_mdl "
                    f"{chain_dir}/tree 'ark:gunzip -c {archive}|' 'ark:|gzip -c >{out_ali}'") as log:
            job, failed = {}, 0
            for key, tids in read_transition_ids(archive).items():
                new = convert_alignment(gmm_tm, tm, tree, tids, f, repeat_frames=opts.repeat_frames)
                if new is None:
                    failed += 1
                    log(f"WARNING (convert-ali): could not convert alignment for key {key} (possibly "
                        "truncated alignment?)")
                else:
                    job[key] = new
            log(f"LOG (convert-ali): Succeeded converting alignments for {len(job)} files, failed for {failed}")
        converted.append(job)
        summary.converted += len(job)
        summary.convert_failed += failed
    if not summary.converted:
        raise PrepareError(f"{ali_dir}: no alignment could be converted to the chain topology")
    write_chain_tree_dir(chain_dir, tree, tm, converted)
    # build_tree.sh's final.mdl: only its transition model is read (train.py, mkgraph.sh)
    copy_file(os.path.join(chain_dir, "0.trans_mdl"), os.path.join(chain_dir, "final.mdl"))
    write_text(os.path.join(chain_dir, "frame_subsampling_factor"), f"{f}\n")
    if os.path.isfile(os.path.join(lang_dir, "phones.txt")):      # build_tree.sh: cp $lang/phones.txt $dir
        copy_file(os.path.join(lang_dir, "phones.txt"), os.path.join(chain_dir, "phones.txt"))
    summary.num_pdfs = int(tree.num_pdfs)


def stage_phone_lm(chain_dir: str, opts: PrepareOptions, summary: PrepareSummary, out_dir: str | None = None) -> None:
    """Stage 2: phone_lm.fst from the tree dir's (converted) alignments, in `out_dir` (default: the
    tree dir itself; chain/train.py's stage -6 writes it into its --dir)."""
    from .topology import read_chain_tree_dir
    out_dir = out_dir or chain_dir
    tree_dir = read_chain_tree_dir(chain_dir)
    out = os.path.join(out_dir, "phone_lm.fst")
    model = "0.trans_mdl" if os.path.isfile(os.path.join(chain_dir, "0.trans_mdl")) else "final.mdl"
    with JobLog(os.path.join(out_dir, "log", "make_phone_lm.log"),
                f"ali-to-phones {chain_dir}/{model} 'ark:gunzip -c {chain_dir}/ali.*.gz|' ark:- | "
                f"chain-est-phone-lm {opts.lm_opts_text} ark:- {out}".replace("  ", " ")) as log:
        estimator = LanguageModelEstimator(opts.lm_opts)
        seqs = tree_dir.phone_sequences()
        if not seqs:
            raise PrepareError(f"{chain_dir}: no alignments for the phone LM")
        for seq in seqs.values():
            estimator.add_counts(seq)
        fst = estimator.estimate()
        _write_fst(fst, out)
        states, arcs = _fst_size(fst)
        log(f"LOG (chain-est-phone-lm): {len(seqs)} phone sequences; [hard] backoff target "
            f"{estimator.target_num_states} states, pruned from {estimator.pruned_from} to {states}; "
            f"{states} states, {arcs} arcs, perplexity on training data {estimator.perplexity:.6g}")
    summary.phone_lm_states = states


def stage_den_fst(chain_dir: str, summary: PrepareSummary) -> None:
    """Stage 3: den.fst and normalization.fst (chain-make-den-fst)."""
    from .den_graph import load_tree_and_transition_model, make_den_fst, read_fst
    tree, trans, lm = (os.path.join(chain_dir, n) for n in ("tree", "0.trans_mdl", "phone_lm.fst"))
    with JobLog(os.path.join(chain_dir, "log", "make_den_fst.log"),
                f"chain-make-den-fst {tree} {trans} {lm} {chain_dir}/den.fst {chain_dir}/normalization.fst") as log, \
            _logged_warnings(log):
        parts = load_tree_and_transition_model(_need(tree, "stage 1's tree"), _need(trans, "stage 1's model"))
        den, norm = make_den_fst(parts, read_fst(_need(lm, "stage 2's phone LM"), "phone LM"), what=lm)
        _write_fst(den, os.path.join(chain_dir, "den.fst"))
        _write_fst(norm, os.path.join(chain_dir, "normalization.fst"))
        summary.den_states, summary.den_arcs = _fst_size(den)
        log(f"denominator FST with {summary.den_states} states and {summary.den_arcs} arcs; normalization FST "
            f"with {norm.num_states} states")


def _supervision_inputs(ali_dir: str, opts: PrepareOptions
                        ) -> tuple[list[str], Callable[[str], Iterator[tuple[str, object]]], str]:
    """The archives, a reader of one archive as (key, input) pairs, and the Kaldi pipeline."""
    from ..kaldi.alignment import read_transition_ids
    from ..kaldi.transition import read_transition_model
    if opts.lat_dir:
        from ..kaldi.lattice import read_compact_lattices
        return (_job_archives(opts.lat_dir, "lat"), read_compact_lattices,
                f"lattice-align-phones --replace-output-symbols=true {opts.lat_dir}/final.mdl "
                "'ark:gunzip -c {archive}|' ark:- | chain-get-supervision --lattice-input=true")
    gmm_tm = read_transition_model(_need(os.path.join(ali_dir, "final.mdl"), "the alignments' model"))

    def read(archive: str):
        from .topology import ChainTopologyError, phones_with_lengths
        for key, tids in read_transition_ids(archive).items():
            try:
                yield key, phones_with_lengths(gmm_tm, tids, f"{archive}: {key}")
            except ChainTopologyError as e:
                yield key, e
    return (_job_archives(ali_dir, "ali"), read,
            f"ali-to-phones --write-lengths {ali_dir}/final.mdl 'ark:gunzip -c {{archive}}|' ark:- | "
            "chain-get-supervision")


def _supervisions(items, make, utts: set[str], lengths: dict[str, int], f: int, tolerance: int,
                  seen: set[str], counts: dict[str, int], log) -> Iterator[tuple[str, object]]:
    """(key, Supervision) for the inputs of the data dir's utterances, counting failures (Kaldi
    warns and goes on) and lengths that nnet3-chain-get-egs would refuse."""
    from .supervision import SupervisionError
    for key, value in items:
        if key not in utts:
            continue
        seen.add(key)
        try:
            sup = make(key, value)
        except (SupervisionError, UsageError) as e:
            counts["failed"] += 1
            counts.setdefault("first", str(e) if key in str(e) else f"utterance '{key}': {e}")
            log(f"WARNING (chain-get-supervision): {e}")
            continue
        expected = (lengths[key] + f - 1) // f
        if abs(sup.frames_per_sequence - expected) > tolerance:
            counts["length"] += 1
            log(f"WARNING: {key}: supervision has {sup.frames_per_sequence} frames, the features "
                f"{lengths[key]} ({expected} after subsampling by {f}); left out")
            continue
        counts["done"] += 1
        yield key, sup


def stage_supervision(ali_dir: str, data_dir: str, chain_dir: str, opts: PrepareOptions,
                      summary: PrepareSummary, rank: int = 0, world_size: int = 1) -> None:
    """Stage 4: supervision.N.ark for the data dir's utterances; `rank` of `world_size` processes
    makes the archives N with (N - 1) mod world_size = rank (each writes its own logs), and only
    rank 0 writes num_supervision_jobs: the caller waits for every rank before reading."""
    from ..kaldi.datadir import DataDir
    from ..kaldi.transition import read_transition_model
    from .den_graph import load_tree_and_transition_model
    from .supervision import SupervisionOptions, supervision_from_lattice, supervision_from_phones
    from .supervision_io import write_supervisions
    f = opts.frame_subsampling_factor
    sup_opts = SupervisionOptions(opts.left_tolerance, opts.right_tolerance, f, opts.lm_scale)
    data = DataDir(data_dir)
    utts = set(data.utts)
    lengths = data.lengths
    missing = sorted(utts - set(lengths))
    if missing:
        raise PrepareError(f"{data_dir}: no frame count for utterance {missing[0]!r} (feats.scp / utt2num_frames)")
    tree, trans = os.path.join(chain_dir, "tree"), os.path.join(chain_dir, "0.trans_mdl")
    parts = load_tree_and_transition_model(_need(tree, "stage 1's tree"), _need(trans, "stage 1's model"))
    archives, read, pipeline = _supervision_inputs(ali_dir, opts)
    lat_tm = read_transition_model(_need(os.path.join(opts.lat_dir, "final.mdl"), "the lattices' model")) \
        if opts.lat_dir else None

    def make(key: str, value):
        if isinstance(value, Exception):
            raise value
        if lat_tm is not None:
            return supervision_from_lattice(parts, lat_tm, value, sup_opts, key)
        return supervision_from_phones(parts, value, sup_opts, key)

    seen: set[str] = set()
    for j, archive in enumerate(archives, start=1):
        if (j - 1) % world_size != rank:
            continue
        out = os.path.join(chain_dir, f"supervision.{j}.ark")
        command = (pipeline.format(archive=archive) + f" --left-tolerance={opts.left_tolerance} "
                   f"--right-tolerance={opts.right_tolerance} --frame-subsampling-factor={f}"
                   + (f" --lm-scale={opts.lm_scale}" if opts.lm_scale else "") + f" {tree} {trans} ark:- ark,t:{out}")
        with JobLog(os.path.join(chain_dir, "log", f"get_supervision.{j}.log"), command) as log:
            counts = {"done": 0, "failed": 0, "length": 0}
            write_supervisions(out, _supervisions(read(archive), make, utts, lengths, f,
                                                  opts.supervision_length_tolerance, seen, counts, log))
            log(f"LOG (chain-get-supervision): Generated chain supervision information for {counts['done']} "
                f"utterances, errors on {counts['failed']}"
                + (f"; {counts['length']} left out for their length" if counts["length"] else ""))
        summary.supervisions += counts["done"]
        summary.supervision_failed += counts["failed"]
        if "first" in counts and not summary.first_failure:
            summary.first_failure = f"{archive}: {counts['first']}"
        summary.length_mismatch += counts["length"]
        summary.supervision_archives.append(out)
    summary.no_input = len(utts - seen)
    if world_size > 1:
        return
    if not summary.supervisions:
        source = opts.lat_dir or ali_dir
        raise PrepareError(f"no supervision for the utterances of {data_dir} from {source} "
                           f"({len(seen)} of its {len(utts)} utterances found there)"
                           + (f"; the first failure: {summary.first_failure}" if summary.first_failure else ""))
    write_text(os.path.join(chain_dir, "num_supervision_jobs"), f"{len(archives)}\n")


def prepare_chain_dir(lang_dir: str, ali_dir: str, data_dir: str, chain_dir: str,
                      opts: PrepareOptions | None = None, say: Callable[[str], None] | None = None
                      ) -> PrepareSummary:
    """Every stage from `opts.stage` on (module docstring)."""
    opts = opts or PrepareOptions()
    say = say or (lambda line: None)
    for d, what in ((lang_dir, "lang"), (ali_dir, "alignment"), (data_dir, "data")):
        if not os.path.isdir(d):
            raise PrepareError(f"{d}: no such {what} directory")
    if opts.lat_dir and not os.path.isdir(opts.lat_dir):
        raise PrepareError(f"{opts.lat_dir}: no such lattice directory (--lat-dir)")
    if not 0 <= opts.stage < len(STAGES):
        raise PrepareError(f"--stage={opts.stage}: must be 0 .. {len(STAGES) - 1}")
    os.makedirs(os.path.join(chain_dir, "log"), exist_ok=True)   # OSError naming it: one line in main
    summary = PrepareSummary()
    steps = [lambda: stage_gen_topo(lang_dir, chain_dir),
             lambda: stage_tree(lang_dir, ali_dir, chain_dir, opts, summary),
             lambda: stage_phone_lm(chain_dir, opts, summary),
             lambda: stage_den_fst(chain_dir, summary),
             lambda: stage_supervision(ali_dir, data_dir, chain_dir, opts, summary)]
    for stage in range(opts.stage, len(STAGES)):
        t0 = time.time()
        steps[stage]()
        say(f"{PROG}: stage {stage} ({STAGES[stage]}) done in {time.time() - t0:.1f} s")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(format="%(levelname)s (%(name)s) %(message)s", level=logging.WARNING)
    p = KaldiArgumentParser(
        prog=PROG, usage=f"{PROG} [options] <lang-dir> <ali-dir> <data-dir> <chain-dir>",
        description="A chain directory from a GMM system: chain lang dir, monophone chain tree and converted "
                    "alignments, phone_lm.fst, den.fst, normalization.fst, supervisions (docs/chain.md 8).")
    p.add_argument("--stage", type=int, default=0, help="start at this stage: 0 gen_topo, 1 tree, 2 phone_lm, "
                                                       "3 den_fst, 4 supervision")
    p.add_argument("--frame-subsampling-factor", type=int, default=3,
                   help="build_tree.sh's and chain-get-supervision's frame-subsampling factor")
    p.add_argument("--left-tolerance", type=int, default=5, help="chain-get-supervision --left-tolerance")
    p.add_argument("--right-tolerance", type=int, default=5, help="chain-get-supervision --right-tolerance")
    p.add_argument("--lm-scale", type=float, default=0.0,
                   help="chain-get-supervision --lm-scale (lattice input only)")
    p.add_argument("--lm-opts", default="", help="options of chain-est-phone-lm, e.g. "
                                                 "'--num-extra-lm-states=2000' (train.py's --chain.lm-opts)")
    p.add_argument("--shared-phones", type=kaldi_bool, default=True,
                   help="phones of a set of <lang-dir>/phones/sets.int share their pdfs in the monophone tree")
    p.add_argument("--lat-dir", default="", help="supervisions from <lat-dir>/lat.N.gz (with its final.mdl) "
                                                 "instead of the alignments")
    p.add_argument("args", nargs="*")
    # `--lm-opts "--num-extra-lm-states=2000"` (two words, as shell recipes pass it): argparse
    # would take the value for an option
    argv = list(argv)
    for i in range(len(argv) - 2, -1, -1):
        if argv[i] == "--lm-opts":
            argv[i:i + 2] = [f"--lm-opts={argv[i + 1]}"]
    try:
        a = p.parse_args(argv)
        if len(a.args) != 4:
            p.error(f"expected 4 arguments, got {len(a.args)}")
        f = a.frame_subsampling_factor
        if f < 1:
            raise PrepareError(f"--frame-subsampling-factor={f} must be >= 1")
        if a.left_tolerance < 0 or a.right_tolerance < 0 or a.left_tolerance + a.right_tolerance + 1 < f:
            raise PrepareError(f"--left-tolerance={a.left_tolerance} and --right-tolerance={a.right_tolerance} "
                               f"must be >= 0 with left + right + 1 >= --frame-subsampling-factor={f}")
        if not 0.0 <= a.lm_scale < 1.0:
            raise PrepareError(f"--lm-scale={a.lm_scale} must be in [0, 1)")
        if a.lm_scale and not a.lat_dir:
            raise PrepareError("--lm-scale needs --lat-dir (alignments have no graph costs)")
        opts = PrepareOptions(f, a.left_tolerance, a.right_tolerance, a.lm_scale, parse_lm_opts(a.lm_opts),
                              a.lm_opts, a.shared_phones, a.lat_dir or None, a.stage)
        lang_dir, ali_dir, data_dir, chain_dir = a.args
        s = prepare_chain_dir(lang_dir, ali_dir, data_dir, chain_dir, opts,
                              say=lambda line: print(line, file=sys.stderr))
    except (UsageError, OSError) as e:   # the user's options, data or files; anything else is a bug
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except SystemExit as e:              # the parser's usage error (its line is printed) or --help
        return int(e.code or 0)
    if opts.stage <= 4:
        print(f"{PROG}: {chain_dir}: "
              + (f"tree with {s.num_pdfs} pdfs, {s.converted} alignments converted ({s.convert_failed} failed); "
                 if opts.stage <= 1 else "")
              + (f"phone LM of {s.phone_lm_states} states; " if opts.stage <= 2 else "")
              + (f"den.fst of {s.den_states} states, {s.den_arcs} arcs; " if opts.stage <= 3 else "")
              + f"{s.supervisions} supervisions in {len(s.supervision_archives)} archives ({s.supervision_failed} "
              f"failed, {s.length_mismatch} of the wrong length, {s.no_input} utterances of {data_dir} without "
              f"{'lattice' if opts.lat_dir else 'alignment'})", file=sys.stderr)
    return 0


__all__ = ["PrepareError", "PrepareOptions", "PrepareSummary", "lang_phones", "parse_lm_opts", "prepare_chain_dir",
           "stage_tree"]


if __name__ == "__main__":
    sys.exit(main())
