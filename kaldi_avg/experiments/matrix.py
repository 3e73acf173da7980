"""The experiment matrix of docs/algorithms.md 3.3, scaled to a 2-core CPU and a corpus of about
100k frames: one `specs_<id>(quick)` per experiment, returning its runs.

Scaling choices shared by all experiments: a worker's minibatch is 64 chunks of 20 frames (1,280
frames: the paper-scale minibatch of §4.4 is 2,688 frames), so periods are given in local steps of
1,280 frames; the frame budget is a few epochs of the training set, equal for every N (so larger N
means fewer steps per worker, as in the papers' epoch-based comparisons).

Learning rates follow each algorithm's convention (the `LR vs N` column of §2.12), with η_eff the
single-worker effective rate: MA and the gossip algorithms use N·η_eff (Kaldi's rule; E1 also runs the
unscaled η_eff), BMUF, EASGD and ASGD the single-worker η_eff (the filter, the elastic force or the
server supply the rest), SSGD sums the workers' gradients of the summed objective (per-frame rate
η_eff, i.e. linear scaling with the total batch).
"""
from __future__ import annotations

from collections.abc import Callable

from .dataset import CHUNK_WIDTH
from .runner import SINGLE, RunSpec

CHUNKS = 64
STEP_FRAMES = CHUNKS * CHUNK_WIDTH
SEEDS_FULL = (0, 1, 2)


def _epochs(quick: bool, full: float, fast: float) -> float:
    return fast if quick else full


def single(experiment: str, seed: int, epochs: float, evaluations: int, **extra) -> RunSpec:
    """The one-worker baseline: the single-worker learning rate and minibatch, same frame budget."""
    return RunSpec(experiment, SINGLE, SINGLE, 1, seed=seed, epochs=epochs, evaluations=evaluations, extra=extra)


# ---- E1: Kaldi-style model averaging, frames per synchronization ------------------------------------
E1_SYNC_OVERHEAD_S = 1.0   # Kaldi's per-iteration job launch + model files (§4.2, §4.4)


def specs_e1(quick: bool) -> list[RunSpec]:
    """Quick: N = 2 and 8 with lr = N·η_eff, plus the unscaled η_eff at N = 8."""
    workers = (2, 8) if quick else (2, 4, 8)
    periods = (1, 4, 16, 64) if quick else (1, 2, 4, 8, 16, 32, 64, 128)
    epochs, evaluations = (1.5, 4) if quick else (4.0, 6)
    specs = [single("E1", 0, epochs, evaluations, period_steps=0, lr_rule="single")]
    for n in workers:
        rules = (("N*lr", float(n)), ("lr", 1.0)) if n == max(workers) or not quick else (("N*lr", float(n)),)
        for rule, scale in rules:
            for steps in periods:
                specs.append(RunSpec("E1", f"ma {rule}", "ma", n, options={"period_frames": steps * STEP_FRAMES},
                                     lr_scale=scale, epochs=epochs, sync_overhead_s=E1_SYNC_OVERHEAD_S,
                                     evaluations=evaluations, extra={"period_steps": steps, "lr_rule": rule}))
    return specs


# ---- E2: Li et al. 2017 algorithm comparison -------------------------------------------------------
# Li et al.'s sync period is 25.6k frames per worker, ~1/900 of a worker's epoch at N = 16; here a
# worker's epoch is a few steps, so the period is the shortest possible: every local step.
E2_PERIOD = STEP_FRAMES


def e2_variants(quick: bool) -> list[tuple[str, str, dict, bool]]:
    """(label, algorithm, options, lr scaled by N)."""
    period = {"period_frames": E2_PERIOD}
    variants = [
        ("ssgd", "ssgd", {"grad_reduce": "sum"}, False),
        ("ma (bsp)", "ma", period, True),
        ("bmuf-cbm", "bmuf", period, False),
        ("bmuf-nbm", "bmuf", {**period, "bmuf_nesterov": True}, False),
        ("easgd b=0.9", "easgd", period, False),
        ("asgd", "asgd", period, False),
    ]
    if not quick:
        variants[4:4] = [("bmuf-nbm-cntk", "bmuf", {**period, "bmuf_nesterov": True, "bmuf_nbm_form": "cntk"}, False),
                         ("easgd a=0.5", "easgd", {**period, "easgd_alpha": 0.5}, False)]
    return variants


def specs_e2(quick: bool) -> list[RunSpec]:
    workers = (2, 8) if quick else (2, 4, 8, 16)
    seeds = (0, 1) if quick else SEEDS_FULL
    epochs, evaluations = (1.0, 4) if quick else (4.0, 6)
    specs = [single("E2", seed, epochs, evaluations) for seed in seeds]
    for n in workers:
        for label, name, options, scaled in e2_variants(quick):
            for seed in seeds:
                specs.append(RunSpec("E2", label, name, n, seed=seed, options=options, evaluations=evaluations,
                                     lr_scale=float(n) if scaled else 1.0, epochs=epochs))
    return specs


# ---- E3: batch-size ceiling, SSGD against ADPSGD -----------------------------------------------------
E3_BASE_CHUNKS = 8   # per-learner chunks at 1x: N·b = 64 chunks, the single-worker minibatch


def specs_e3(quick: bool) -> list[RunSpec]:
    n = 8
    factors = (1, 2, 4) if quick else (1, 2, 3, 4)
    epochs = _epochs(quick, 4.0, 1.0)
    specs = []
    for factor in factors:
        chunks = E3_BASE_CHUNKS * factor
        extra = {"batch_factor": factor, "total_batch_chunks": n * chunks}
        specs.append(RunSpec("E3", "ssgd", "ssgd", n, options={"grad_reduce": "sum"}, chunks=chunks,
                             epochs=epochs, extra=extra))
        specs.append(RunSpec("E3", "adpsgd", "adpsgd", n, lr_scale=float(n), chunks=chunks, epochs=epochs,
                             extra=extra))
    return specs


# ---- E4: hierarchical ADPSGD -------------------------------------------------------------------------
def specs_e4(quick: bool) -> list[RunSpec]:
    n = 8
    epochs = _epochs(quick, 4.0, 1.0)
    specs = [RunSpec("E4", "ssgd", "ssgd", n, options={"grad_reduce": "sum"}, epochs=epochs, extra={"group_size": n}),
             RunSpec("E4", "adpsgd", "adpsgd", n, lr_scale=float(n), epochs=epochs, extra={"group_size": 1})]
    for g in (2, 4):
        specs.append(RunSpec("E4", f"hadpsgd G={g}", "hadpsgd", n, options={"group_size": g}, lr_scale=float(n),
                             epochs=epochs, extra={"group_size": g}))
    return specs


# ---- E5: straggler resilience of the ADPSGD variants ----------------------------------------------
def e5_seconds(epochs: float, train_frames: int, workers: int, frames_per_s: float) -> float:
    """Simulated time in which N unslowed workers process `epochs` epochs (each worker computes
    `frames_per_s`, so this is the frame budget of the step-budgeted experiments)."""
    return epochs * train_frames / (workers * frames_per_s)


def specs_e5(quick: bool, train_frames: int, frames_per_s: float) -> list[RunSpec]:
    n = 8
    epochs = _epochs(quick, 4.0, 1.0)
    budget = e5_seconds(epochs, train_frames, n, frames_per_s)
    variants = (("fixed ring", "adpsgd", {"pairing": "ring"}), ("random ring", "adpsgd", {"pairing": "random"}),
                ("delay-by-one", "adpsgd-delay1", {"pairing": "ring"}))
    specs = []
    for slow in (1.0, 2.0, 4.0):
        for label, name, options in variants:
            specs.append(RunSpec("E5", label, name, n, options=options, lr_scale=float(n), sim_seconds=budget,
                                 evaluations=8,
                                 slowdown={0: slow} if slow != 1.0 else {}, extra={"slowdown_factor": slow}))
    return specs


SIMULATED: dict[str, Callable[..., list[RunSpec]]] = {
    "E1": specs_e1, "E2": specs_e2, "E3": specs_e3, "E4": specs_e4, "E5": specs_e5}
