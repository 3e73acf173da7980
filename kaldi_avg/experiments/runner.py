"""One simulated training run: N real workers (`train.learner.Learner`: the network replica, Kaldi's
nnet3-train update and the worker's minibatches) driven by a `kaldi_avg.parallel` algorithm in the
in-process `Simulator`, with held-out objective and accuracy measured along the way.

Data: worker k of N reads archive ((it·N + k) mod A) in its pass `it`, Kaldi's round-robin, so the
workers' shards are disjoint while A ≥ N. The learning rate decays exponentially from the initial
to the final effective rate over the run (Kaldi's schedule, applied continuously; each learner keeps
one optimizer for the whole run). Each time another 1/`evaluations` of the budget (frames, or
simulated seconds) is spent, the reference model is scored on the held-out set: the algorithm's
global model where it keeps one (BMUF's θ, the EASGD centre, the ASGD server), else the workers' mean;
the last point is the model `finalize()` leaves. The whole run is one `Simulator.run` call, so
asynchronous workers are never re-aligned in the middle of a run.

Simulated time (the seed papers' regime, not this CPU's): a step costs T_c = frames / `frames_per_s`
(about one 2019 GPU on the paper-scale BLSTM, §4.4), with 10% lognormal jitter; the α–β cost model
keeps the papers' ratio of communication to computation, a ring allreduce of the model costing
`comm_ratio` × T_c of the default minibatch. Kaldi-style runs add a fixed `sync_overhead_s` per
synchronization (job launch and model files, §4.2). Measured seconds (this machine) are reported too.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import MinibatchStream
from ..parallel import CostModel, LocalCommunicator, Simulator, StepTime, make_algorithm
from ..parallel.base import Algorithm
from ..train.diagnostics import TrainLog
from ..train.learner import Learner
from ..train.objective import compute_prob
from ..train.schedule import geometric_decay
from .dataset import Dataset

SINGLE = "single"   # the one-worker baseline (SSGD with N = 1: no communication)


@dataclass
class Settings:
    """What all runs of an invocation share."""

    initial_lrate: float = 0.004       # effective learning rate η_eff (per frame: Kaldi's summed objective)
    final_lrate: float = 0.0004
    momentum: float = 0.5
    max_param_change: float = 2.0
    frames_per_s: float = 10_000.0     # simulated compute speed of one worker
    comm_ratio: float = 0.1            # ring allreduce time / step time at `reference_chunks`
    alpha_s: float = 50e-6             # latency of one message
    jitter: float = 0.1
    reference_chunks: int = 64


@dataclass
class RunSpec:
    experiment: str
    label: str                      # the variant, as tables and plots name it
    algorithm: str                  # a kaldi_avg.parallel algorithm, or SINGLE
    workers: int
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)   # make_algorithm keyword arguments
    lr_scale: float = 1.0           # local learning rate = lr_scale × η_eff
    chunks: int = 64                # chunks per minibatch per worker
    epochs: float = 3.0             # frames budget, summed over workers, in epochs
    sim_seconds: float | None = None  # simulated-time budget instead (asynchronous comparisons)
    slowdown: dict[int, float] = field(default_factory=dict)
    sync_overhead_s: float = 0.0
    evaluations: int = 6
    extra: dict[str, Any] = field(default_factory=dict)     # copied into the row


def worker_batches(data: Dataset, worker: int, workers: int, chunks: int, srand: int) -> Iterator:
    """Worker `worker`'s endless minibatch stream: one archive per pass, round-robin over archives."""
    empty_passes = 0
    for it in itertools.count():
        stream = MinibatchStream.for_job(data.source, data.plan, data.chunk_config, str(chunks), job=worker,
                                         iteration=it, archives_processed=it * workers, srand=srand)
        empty_passes = 0 if len(stream) else empty_passes + 1
        if empty_passes > data.plan.num_archives:   # every archive is smaller than one minibatch
            raise ValueError(f"no archive holds a minibatch of {chunks} chunks: use a larger corpus")
        yield from stream


def step_seconds(data: Dataset, chunks: int, settings: Settings) -> float:
    return chunks * data.mean_chunk_frames / settings.frames_per_s


def cost_model(spec: RunSpec, data: Dataset, model_bytes: int, settings: Settings) -> CostModel:
    """α–β with the papers' communication/computation ratio; a fixed per-sync overhead goes into α
    (a ring allreduce pays 2(N−1)α)."""
    reference = step_seconds(data, settings.reference_chunks, settings)
    beta = settings.comm_ratio * reference / (2 * model_bytes)
    alpha = settings.alpha_s
    if spec.sync_overhead_s and spec.workers > 1:
        alpha += spec.sync_overhead_s / (2 * (spec.workers - 1))
    return CostModel(alpha, beta)


def build_algorithm(spec: RunSpec) -> Algorithm:
    if spec.algorithm == SINGLE:
        return make_algorithm("ssgd", LocalCommunicator(), n_local=1)
    return make_algorithm(spec.algorithm, LocalCommunicator(), n_local=spec.workers, seed=spec.seed, **spec.options)


def evaluate(evaluator: Learner, params: torch.Tensor, data: Dataset) -> tuple[float, float]:
    evaluator.flat.params.copy_(params)
    stats = compute_prob(evaluator.module, data.valid)
    return stats.objf_per_frame, stats.accuracy


def total_steps(spec: RunSpec, data: Dataset) -> int:
    """Steps per worker that spend the frame budget."""
    per_step = spec.workers * spec.chunks * data.mean_chunk_frames
    return max(spec.evaluations, round(spec.epochs * data.train_frames / per_step))


class Progress:
    """The Simulator's observer: decays the learning rate with the run's progress and scores the
    reference model each time another 1/`evaluations` of the budget is spent."""

    def __init__(self, spec: RunSpec, data: Dataset, settings: Settings, algorithm: Algorithm,
                 learners: Sequence[Learner], logs: Sequence[TrainLog], nnet) -> None:
        self.spec, self.data, self.settings = spec, data, settings
        self.algorithm, self.learners, self.logs = algorithm, learners, logs
        self.evaluator = Learner(nnet)   # Learner copies the network
        self.steps = None if spec.sim_seconds is not None else total_steps(spec, data)
        self.curve: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._seen = (0.0, 0.0)   # train objective and frames already reported

    def fraction(self, now: float, steps: Sequence[int]) -> float:
        if self.steps is None:
            return now / self.spec.sim_seconds
        return sum(steps) / (self.spec.workers * self.steps)

    def learning_rate(self, fraction: float) -> float:
        """Kaldi's geometric decay by the fraction of the budget spent."""
        s = self.settings
        return self.spec.lr_scale * geometric_decay(min(fraction, 1.0), s.initial_lrate, s.final_lrate)

    def __call__(self, now: float, stepped: Sequence[int], steps: Sequence[int]) -> None:
        fraction = self.fraction(now, steps)
        for learner in self.learners:
            learner.set_learning_rate(self.learning_rate(fraction))
        if len(self.curve) < self.spec.evaluations - 1 and fraction >= (len(self.curve) + 1) / self.spec.evaluations:
            self.record(self.algorithm.reference_params(), now, steps, fraction)

    def record(self, params: torch.Tensor, now: float, steps: Sequence[int], fraction: float) -> None:
        t0 = time.perf_counter()
        objf, accuracy = evaluate(self.evaluator, params, self.data)
        self.eval_seconds += time.perf_counter() - t0
        total, frames = sum(log.total for log in self.logs), sum(log.frames for log in self.logs)
        seen_total, seen_frames = self._seen
        self._seen = (total, frames)
        train = (total - seen_total) / (frames - seen_frames) if frames > seen_frames else math.nan
        self.curve.append({"frames": frames, "sim_seconds": now, "steps_per_worker": max(steps),
                           "lr": self.learning_rate(fraction), "train_objf": train,
                           "valid_objf": objf, "valid_accuracy": accuracy})


def run(spec: RunSpec, data: Dataset, settings: Settings) -> dict[str, Any]:
    """Train one configuration; the row for the results table (with its learning curve)."""
    torch.manual_seed(spec.seed)
    nnet = data.build_nnet(spec.seed)
    learners = [Learner(nnet, min_deriv_time=data.min_deriv_time) for _ in range(spec.workers)]
    logs = [TrainLog(f"{spec.label} worker {k}") for k in range(spec.workers)]
    for k, (learner, log) in enumerate(zip(learners, logs)):
        learner.start(worker_batches(data, k, spec.workers, spec.chunks, spec.seed), log,
                      spec.lr_scale * settings.initial_lrate, settings.momentum, settings.max_param_change,
                      1.0 / spec.workers)
    algorithm = build_algorithm(spec)
    step_time = StepTime(step_seconds(data, spec.chunks, settings), settings.jitter, dict(spec.slowdown))
    cost = cost_model(spec, data, learners[0].flat.params.numel() * 4, settings)
    simulator = Simulator(algorithm, learners, step_time, cost, seed=spec.seed)
    progress = Progress(spec, data, settings, algorithm, learners, logs, nnet)
    budget = {"until_s": spec.sim_seconds} if spec.sim_seconds is not None else {"steps": progress.steps}
    t0 = time.perf_counter()
    report = simulator.run(**budget, observer=progress, finalize=True)
    train_seconds = time.perf_counter() - t0 - progress.eval_seconds
    progress.record(learners[0].flat.params, report.wall_time_s, report.steps, 1.0)  # finalize: every replica
    return row(spec, settings, progress.curve, report, train_seconds, progress.eval_seconds, algorithm,
               data.train_frames)


def row(spec: RunSpec, settings: Settings, curve: list[dict], report, train_seconds: float,
        eval_seconds: float, algorithm: Algorithm, epoch_frames: int) -> dict[str, Any]:
    final = curve[-1]
    return {
        "experiment": spec.experiment, "algorithm": spec.label, "dist_algorithm": algorithm.name,
        "N": spec.workers, "seed": spec.seed, "period_frames": algorithm.describe()["period_frames"],
        "chunks_per_minibatch": spec.chunks, "lr": spec.lr_scale * settings.initial_lrate,
        "lr_scale": spec.lr_scale, "frames": final["frames"], "valid_objf": final["valid_objf"],
        "valid_accuracy": final["valid_accuracy"], "epoch_frames": epoch_frames, "sim_wall_seconds": report.wall_time_s,
        "measured_seconds": train_seconds, "eval_seconds": eval_seconds,
        "comm_seconds": report.comm_seconds, "server_wait_seconds": report.server_wait_s,
        "steps_per_worker": max(report.steps), "slowdown": {str(k): v for k, v in spec.slowdown.items()},
        "comm": report.comm, "hyperparameters": report.algorithm, "curve": curve, **spec.extra,
    }


# ---- many runs, on the machine's cores ----------------------------------------------------------
_SHARED: dict[str, Any] = {}


def _run_indexed(item: tuple[int, RunSpec]) -> tuple[int, dict[str, Any]]:
    torch.set_num_threads(1)   # one core per run: runs go in parallel instead
    index, spec = item
    return index, run(spec, _SHARED["data"], _SHARED["settings"])


def run_all(specs: Sequence[RunSpec], data: Dataset, settings: Settings, jobs: int = 1,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """All runs, `jobs` at a time (forked workers share the loaded data); rows in `specs` order."""
    _SHARED.update(data=data, settings=settings)
    rows: dict[int, dict[str, Any]] = {}
    items = list(enumerate(specs))
    if jobs <= 1 or len(specs) == 1:
        results: Iterator = map(_run_indexed, items)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(jobs)
        results = pool.imap_unordered(_run_indexed, items)
    try:
        for index, result in results:
            rows[index] = result
            log(f"  [{len(rows)}/{len(specs)}] {summary(result)}")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return [rows[i] for i in range(len(specs))]


def summary(r: dict[str, Any]) -> str:
    return (f"{r['experiment']} {r['algorithm']} N={r['N']} seed={r['seed']} period={r['period_frames']}: "
            f"valid objf {r['valid_objf']:.3f} acc {r['valid_accuracy']:.3f}, {r['frames']:.0f} frames, "
            f"sim {r['sim_wall_seconds']:.1f} s, "
            f"measured {r['measured_seconds']:.1f} s")
