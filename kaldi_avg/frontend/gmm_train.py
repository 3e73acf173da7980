"""Monophone GMM training with the schedule and files of `steps/train_mono.sh`.

gmm-init-mono (global mean/variance of 10 utterances of job 1, shared phones from
phones/sets.int) -> compile-train-graphs -> align-equal-compiled + gmm-acc-stats-ali -> gmm-est
--min-gaussian-occupancy=3; then 39 passes of [realign at Kaldi's iterations with
gmm-boost-silence, beam 6 (retry 24) on the first pass and 10 (retry 40) after] +
gmm-acc-stats-ali + gmm-est --mix-up (Gaussians grow linearly to --totgauss by iteration 30).
Also a command: python -m kaldi_avg.frontend.gmm_train (steps/train_mono.sh).
Files in the experiment dir: 0.mdl, <num_iters>.mdl, final.mdl -> <num_iters>.mdl,
<num_iters>.occs, final.occs, tree, ali.JOB.gz, num_jobs, cmvn_opts, phones.txt, log/.
"""
from __future__ import annotations

import heapq
import os
import sys
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import numpy as np
from tqdm import tqdm

from ..atomic import copy_file, write_bytes, write_lines
from ..kaldi.binary import KaldiFormatError, KaldiWriter
from ..kaldi.runlog import JobLog
from ..options import KaldiArgumentParser, kaldi_bool
from .cliopts import parse_kaldi_args
from .gmm_align import AlignOptions, GmmStats, align_jobs, compile_graphs, equal_align, report_failures
from .gmm_data import Job, load_jobs
from .gmm_model import GmmModel
from .hmm import khg_topology, read_topology, write_tree
from .lang import Lang

REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32, 35, 38)


@dataclass(frozen=True)
class MonoConfig:
    """train_mono.sh's configuration variables (same names, same defaults)."""
    nj: int = 4
    num_iters: int = 40
    max_iter_inc: int = 30
    totgauss: int = 1000
    careful: bool = False
    boost_silence: float = 1.0
    realign_iters: tuple[int, ...] = REALIGN_ITERS
    power: float = 0.25
    cmvn_opts: str = ""
    transition_scale: float = 1.0
    acoustic_scale: float = 0.1
    self_loop_scale: float = 0.1
    seed: int = 0            # of the Gaussian splitting (mix-up) perturbations


def init_mono(topo_path: str, sets_path: str, feats: list[np.ndarray]) -> GmmModel:
    """gmm-init-mono: one Gaussian per pdf with the global mean and variance of `feats`."""
    x = np.concatenate(feats).astype(np.float64)
    mean = x.mean(axis=0)
    var = (x * x).mean(axis=0) - mean * mean
    if np.any(var <= 0):
        raise ValueError(f"gmm-init-mono: bad variance (a feature dimension is constant over "
                         f"{x.shape[0]} frames)")
    topo = khg_topology(read_topology(topo_path))
    with open(sets_path, encoding="utf-8") as f:
        sets = [sorted(int(p) for p in line.split()) for line in f if line.strip()]
    tree = khg.monophone_context_dependency_shared(sets, topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(tree, topo)
    gmm = khg.DiagGmm(1, x.shape[1])
    gmm.set_invvars_and_means((1.0 / var)[None, :].astype(np.float32), mean[None, :].astype(np.float32))
    gmm.set_weights(np.ones(1, np.float32))
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(tree.num_pdfs):
        am.add_pdf(gmm)
    return GmmModel(tm, am, tree)


def target_num_gauss(occs: np.ndarray, target: int, power: float, min_count: float) -> list[int]:
    """AmDiagGmm::ComputeTargetNumPdfs: Gaussians per pdf for --mix-up, handed out one at a time
    to the pdf with the largest occ^power per Gaussian; a pdf whose next Gaussian would have fewer
    than min_count frames is closed (and that step is used up, as in Kaldi)."""
    # entries (-occ^power per Gaussian, pdf, Gaussians, occ^power): heapq pops the largest share
    heap = []
    for pdf, o in enumerate(occs):
        share = float(np.float32(o) ** np.float32(power))
        heap.append((-share / (1 + 1e-10), pdf, 1, share))
    heapq.heapify(heap)
    for _ in range(len(occs), target):
        _, pdf, n, share = heap[0]
        if share == 0:
            break  # every pdf is closed (or has no data)
        heapq.heappop(heap)
        if (n + 1) * min_count >= occs[pdf]:
            heapq.heappush(heap, (0.0, pdf, n, 0.0))
        else:
            heapq.heappush(heap, (-share / (n + 1 + 1e-10), pdf, n + 1, share))
    targets = [1] * len(occs)
    for _, pdf, n, _ in heap:
        targets[pdf] = n
    return targets


def split_gmm(gmm: khg.DiagGmm, target: int, perturb_factor: float, rng: np.random.Generator) -> khg.DiagGmm:
    """DiagGmm::Split: repeatedly halve the heaviest Gaussian into two whose means move apart by
    perturb_factor standard deviations along a random direction.  khg draws that direction from
    std::random_device (a different model every run); a seeded generator keeps training
    reproducible, as Kaldi's is."""
    weights = np.asarray(gmm.weights, np.float32).copy()
    inv_vars = np.asarray(gmm.inv_vars, np.float32).copy()
    means_invvars = np.asarray(gmm.means_invvars, np.float32).copy()
    while weights.size < target:
        k = int(np.argmax(weights))
        weights[k] /= 2
        shift = (rng.standard_normal(inv_vars.shape[1]) * np.sqrt(inv_vars[k]) * perturb_factor).astype(np.float32)
        weights = np.append(weights, weights[k])
        inv_vars = np.vstack([inv_vars, inv_vars[k]])
        means_invvars = np.vstack([means_invvars, means_invvars[k] + shift])
        means_invvars[k] -= shift
    out = khg.DiagGmm.__new__(khg.DiagGmm)
    out.__setstate__((weights, inv_vars, means_invvars))  # (weights, inv_vars, means_invvars); gconsts follow
    return out


def mix_up(am: khg.AmDiagGmm, occs: np.ndarray, target: int, power: float, rng: np.random.Generator,
           perturb_factor: float = 0.01, min_count: float = 20.0) -> None:
    """AmDiagGmm::SplitByCount (gmm-est --mix-up, with gmm-est's perturb factor and min count)."""
    for pdf, n in enumerate(target_num_gauss(occs, target, power, min_count)):
        gmm = am.get_pdf(pdf)
        if gmm.num_gauss < n:
            gmm.copy_from_diag_gmm(split_gmm(gmm, n, perturb_factor, rng))


def gmm_est(model: GmmModel, stats: GmmStats, mix_up_target: int, power: float, min_gaussian_occupancy: float,
            rng: np.random.Generator, log: JobLog) -> np.ndarray:
    """gmm-est (update flags mvwt) with --mix-up; returns the state occupancies."""
    accs = stats.accs
    like, frames = accs.tot_log_like, accs.tot_count
    impr, count = model.khg_trans_model.mle_update(stats.tid_counts, khg.MleTransitionUpdateConfig())
    log(f"Transition model update: average {impr / max(count, 1.0):.6g} log-like improvement per "
        f"frame over {count:.0f} frames.")
    gmm_impr, gmm_count = khg.mle_am_diag_gmm_update(
        khg.MleDiagGmmOptions(min_gaussian_occupancy=min_gaussian_occupancy), accs,
        int(khg.GmmUpdateFlags.kGmmAll), model.am)
    log(f"GMM update: average {gmm_impr / max(gmm_count, 1.0):.6g} objective function improvement "
        f"per frame over {gmm_count:.0f} frames (average log-likelihood {like / max(frames, 1.0):.6g}).")
    occs = np.array([accs.get_acc(i).occupancy.sum() for i in range(accs.num_accs)], np.float32)
    before = model.am.num_gauss
    mix_up(model.am, occs, mix_up_target, power, rng)
    log(f"Split {model.am.num_pdfs} states with target = {mix_up_target}, power = {power}, perturb_factor = 0.01 "
        f"and min_count = 20, split #Gauss from {before} to {model.am.num_gauss}")
    return occs


def _accumulate(model: GmmModel, jobs: list[Job], alignments: dict[str, list[int]], stats: GmmStats,
                log_dir: str, iteration: int) -> None:
    """gmm-acc-stats-ali for every job."""
    tid2pdf = np.asarray(model.khg_trans_model.transition_id_to_pdf_array(), np.int64)
    for job in jobs:
        with JobLog(os.path.join(log_dir, f"acc.{iteration}.{job.index}.log"),
                    f"gmm-acc-stats-ali {iteration}.mdl (job {job.index})") as log:
            done = errors = 0
            for u in job.utts:
                ali = alignments.get(u.id)
                if ali is None:
                    log(f"WARNING: No alignment for utterance {u.id}")
                    errors += 1
                    continue
                stats.add(model.am, u.feats, np.asarray(ali, np.int64), tid2pdf)
                done += 1
            log(f"Done {done} files, {errors} with errors.")


def _write_occs(path: str, occs: np.ndarray) -> None:
    w = KaldiWriter(binary=False)  # gmm-est writes occupancies in text mode
    w.vector(occs)
    write_bytes(path, w.getvalue())


def _link(target: str, link: str) -> None:
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(target, link)


def train_mono(data_dir: str, lang_dir: str, exp_dir: str, config: MonoConfig = MonoConfig()) -> GmmModel:
    """`steps/train_mono.sh [opts] <data> <lang> <exp>`; returns the final model."""
    lang = Lang.load(lang_dir)
    log_dir = os.path.join(exp_dir, "log")
    os.makedirs(log_dir, exist_ok=True)
    write_lines(os.path.join(exp_dir, "num_jobs"), [str(config.nj)])
    copy_file(lang.path("phones.txt"), os.path.join(exp_dir, "phones.txt"))
    write_lines(os.path.join(exp_dir, "cmvn_opts"), [config.cmvn_opts])

    jobs, skipped, num_oov = load_jobs(data_dir, lang, config.nj, config.cmvn_opts)
    with JobLog(os.path.join(log_dir, "init.log"), "gmm-init-mono --shared-phones=phones/sets.int "
                f"--train-feats=<10 utterances of job 1> {lang.path('topo')} 0.mdl tree") as log:
        for line in skipped.lines():
            log(f"WARNING: {line}")
        if num_oov:
            log(f"{num_oov} transcript word(s) not in words.txt were mapped to {lang.oov_id()}")
        subset = [u.feats for u in jobs[0].utts[:10]]
        if not subset:
            raise ValueError(f"{data_dir}: job 1 of {config.nj} has no usable utterances")
        model = init_mono(lang.path("topo"), lang.path("phones", "sets.int"), subset)
        log(f"{model.am.num_pdfs} pdfs, feature dim {model.am.dim}, {len(subset)} utterances for the "
            f"global mean and variance")
    if skipped.count():
        print(f"train_mono: skipped {skipped.count()} utterance(s) (see {log_dir}/init.log)", file=sys.stderr)
    model.write(os.path.join(exp_dir, "0.mdl"))
    write_tree(model.tree, os.path.join(exp_dir, "tree"))

    rng = np.random.default_rng(config.seed)
    num_gauss = model.am.num_gauss
    inc_gauss = int((config.totgauss - num_gauss) / config.max_iter_inc)  # bash $[...] truncates
    graphs = compile_graphs(model, lang, jobs, log_dir)

    stats = GmmStats(model.am, model.khg_trans_model.num_transition_ids)
    alignments: dict[str, list[int]] = {}
    for job in jobs:
        with JobLog(os.path.join(log_dir, f"align.0.{job.index}.log"),
                    f"align-equal-compiled (job {job.index})") as log:
            done = 0
            for u in job.utts:
                if u.id not in graphs:
                    continue
                ali = equal_align(graphs[u.id], u.feats.shape[0], u.id)
                if ali is None:
                    log(f"WARNING: AlignEqual: did not align utterance {u.id} ({u.feats.shape[0]} frames)")
                    continue
                alignments[u.id] = ali
                done += 1
            log(f"Done {done} utterances, {len(job.utts) - done} errors.")
    _accumulate(model, jobs, alignments, stats, log_dir, 0)
    with JobLog(os.path.join(log_dir, "update.0.log"),
                f"gmm-est --min-gaussian-occupancy=3 --mix-up={num_gauss} --power={config.power} 0.mdl") as log:
        gmm_est(model, stats, num_gauss, config.power, 3.0, rng, log)

    silence_phones = lang.ints("optional_silence")
    beam = 6.0
    occs = None
    for x in tqdm(range(1, config.num_iters), desc="train_mono", unit="iter", file=sys.stderr):
        if x in config.realign_iters:
            opts = AlignOptions(beam=beam, retry_beam=4 * beam, careful=config.careful,
                                acoustic_scale=config.acoustic_scale, transition_scale=config.transition_scale,
                                self_loop_scale=config.self_loop_scale)
            alignments, failed = align_jobs(model, jobs, graphs, opts, config.boost_silence, silence_phones,
                                            exp_dir, f"align.{x}.JOB.log")
            report_failures(f"train_mono (iteration {x})", failed, f"{exp_dir}/log/align.{x}.*.log")
        stats = GmmStats(model.am, model.khg_trans_model.num_transition_ids)
        _accumulate(model, jobs, alignments, stats, log_dir, x)
        with JobLog(os.path.join(log_dir, f"update.{x}.log"),
                    f"gmm-est --write-occs={x + 1}.occs --mix-up={num_gauss} --power={config.power} {x}.mdl") as log:
            occs = gmm_est(model, stats, num_gauss, config.power, 10.0, rng, log)
        if x <= config.max_iter_inc:
            num_gauss += inc_gauss
        beam = 10.0

    final = config.num_iters
    model.write(os.path.join(exp_dir, f"{final}.mdl"))
    if occs is not None:
        _write_occs(os.path.join(exp_dir, f"{final}.occs"), occs)
        _link(f"{final}.occs", os.path.join(exp_dir, "final.occs"))
    _link(f"{final}.mdl", os.path.join(exp_dir, "final.mdl"))
    return model


def main(argv: list[str] | None = None) -> int:
    p = KaldiArgumentParser(prog="steps/train_mono.sh",
                            usage="steps/train_mono.sh [options] <data-dir> <lang-dir> <exp-dir>",
                            description="Flat start and monophone training, with delta-delta features "
                                        "(Kaldi's train_mono.sh).")
    d = MonoConfig()
    p.add_argument("--nj", type=int, default=d.nj)
    p.add_argument("--cmd", default="run.pl", help="accepted for compatibility; jobs run in-process")
    p.add_argument("--num-iters", type=int, default=d.num_iters)
    p.add_argument("--max-iter-inc", type=int, default=d.max_iter_inc)
    p.add_argument("--totgauss", type=int, default=d.totgauss)
    p.add_argument("--careful", type=kaldi_bool, default=d.careful)
    p.add_argument("--boost-silence", type=float, default=d.boost_silence)
    p.add_argument("--realign-iters", default=" ".join(map(str, d.realign_iters)))
    p.add_argument("--power", type=float, default=d.power)
    p.add_argument("--norm-vars", type=kaldi_bool, default=False, help="deprecated; prefer --cmvn-opts")
    p.add_argument("--cmvn-opts", default=d.cmvn_opts)
    p.add_argument("--stage", type=int, default=-4, help="accepted for compatibility; training always starts at -4")
    p.add_argument("data_dir")
    p.add_argument("lang_dir")
    p.add_argument("exp_dir")
    a = parse_kaldi_args(p, argv)
    print("steps/train_mono.sh " + " ".join(sys.argv[1:] if argv is None else argv), file=sys.stderr)
    try:
        realign = tuple(int(x) for x in a.realign_iters.split())
        cmvn_opts = ("--norm-vars=true " + a.cmvn_opts).strip() if a.norm_vars else a.cmvn_opts
        config = MonoConfig(nj=a.nj, num_iters=a.num_iters, max_iter_inc=a.max_iter_inc, totgauss=a.totgauss,
                            careful=a.careful, boost_silence=a.boost_silence, realign_iters=realign,
                            power=a.power, cmvn_opts=cmvn_opts)
        train_mono(a.data_dir, a.lang_dir, a.exp_dir, config)
    except (OSError, ValueError, KaldiFormatError) as e:
        print(f"steps/train_mono.sh: {e}", file=sys.stderr)
        return 1
    print(f"steps/train_mono.sh: Done training monophone system in {a.exp_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
