"""What one training iteration does on every rank.

Two strategies share the driver's loop (diagnostics, N.mdl, checkpoints, combination, priors):

* `KaldiJobs` (`--averaging.algorithm ma` without a period: the default): Kaldi's iteration.
  num_jobs(it) independent jobs start from the same shrunk model, round robin over the ranks
  (job j on rank j mod ranks, so the result does not depend on the number of ranks); iteration 0
  keeps the best job, later iterations average the jobs within 1.0 of the best
  (`parallel.ModelAveraging.select_best_` / `average_accepted_`, one flattened collective).
* `AlgorithmWorkers` (any other algorithm, or `ma` with `--averaging.period-frames`): N =
  num-jobs-final workers, N / ranks per rank, each a `Learner` on its job's archive; the algorithm
  synchronizes them during the iteration (`after_backward` / `after_step`) and `finalize()` leaves
  its reference model in every worker at the end. With one rank the workers run under
  `parallel.Simulator` (its event clock orders the asynchronous algorithms' exchanges), so simulated
  N is the same code as real N. Every worker restarts from that reference model at the next
  iteration with a fresh optimizer, as Kaldi's jobs do: in-iteration state (BMUF's block
  momentum, gossip pairings) restarts too; phase switches (post-local SGD) carry over.

Synchronous algorithms need equal step counts: every worker takes the minimum over the workers
of its archive's minibatch count (archives are balanced by frames, so a few minibatches at most
are left; they are counted in the train logs).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from ..data import MinibatchStream, Prefetcher, SkipReport, halve_minibatch_size
from ..parallel import MANUAL, Algorithm, Communicator, Replica, Simulator
from ..parallel.ma import ModelAveraging
from ..parallel.post_local_sgd import PostLocalSGD
from ..kaldi.nnet3.saturation import saturation
from ..model.graph import NnetModule
from . import schedule as sched
from .diagnostics import TrainLog
from .learner import Learner
from .optim import KaldiSgd, flatten_state, load_flat_state, set_learning_rates


@dataclass
class IterationSettings:
    it: int
    num_jobs: int
    lrate: float
    shrink: float
    minibatch_size: str
    max_change: float
    dropout: list[tuple[str, float]]   # (pattern, proportion) set-dropout-proportion edits


def iteration_settings(params, it: int, saturation: float) -> IterationSettings:
    """`saturation`: get_saturation.pl's number for the model the iteration starts from."""
    a = params.args
    lrate = params.lrate(it)
    shrink = sched.shrink_value(it, lrate, saturation, a.trainer_optimization_shrink_value,
                                a.trainer_optimization_shrink_saturation_threshold,
                                a.trainer_optimization_proportional_shrink)
    mb_size = a.trainer_rnn_num_chunk_per_minibatch
    if it == 0:
        mb_size = halve_minibatch_size(mb_size)
    return IterationSettings(it, params.num_jobs(it), lrate, shrink, mb_size,
                             sched.max_param_change(it, a.trainer_max_param_change), params.dropout(it))


def model_saturation(comm: Communicator, module: NnetModule) -> float:
    """Rank 0's saturation of `module` (its statistics of the last iteration), so every rank
    agrees on the shrinkage."""
    module.write_back()
    return comm.allgather_object(saturation(module.nnet))[0]


def job_stream(params, source, plan, s: IterationSettings, job: int, report: SkipReport) -> MinibatchStream:
    a = params.args
    return MinibatchStream.for_job(source, plan, params.chunk_config, s.minibatch_size, job=job, iteration=s.it,
                                   archives_processed=params.archives_processed(s.it), srand=a.trainer_srand,
                                   shuffle_buffer_size=a.trainer_shuffle_buffer_size, report=report)


def train_log(params, s: IterationSettings, job: int) -> TrainLog:
    a = params.args
    return TrainLog(f"nnet3-train (kaldi-avg job {job + 1}, iteration {s.it}) "
                    f"--momentum={a.trainer_optimization_momentum} --max-param-change={s.max_change:g} "
                    f"--l2-regularize-factor={1.0 / s.num_jobs:g} --srand={s.it + a.trainer_srand} "
                    f"--learning-rate={s.lrate:g} --minibatch-size={s.minibatch_size} "
                    f"--optimization.min-deriv-time={params.min_deriv_time}")


def _write_log(params, log: TrainLog, s: IterationSettings, job: int) -> None:
    log.write(os.path.join(params.dir, "log", f"train.{s.it}.{job + 1}.log"))


def _finite(objf: float) -> float:
    return objf if math.isfinite(objf) else -math.inf


class KaldiJobs:
    """Kaldi's iteration: independent jobs, then best-job selection or accepted averaging."""

    def __init__(self, params, comm: Communicator, nnet, source, plan, report: SkipReport) -> None:
        self.params, self.comm = params, comm
        self.source, self.plan, self.report = source, plan, report
        self.learner = Learner(nnet, params.device, params.min_deriv_time)   # runs this rank's jobs in turn
        a = params.args
        max_jobs = max(a.trainer_optimization_num_jobs_initial, a.trainer_optimization_num_jobs_final)
        self.n_local = math.ceil(max_jobs / comm.size)
        self.averaging = ModelAveraging(comm, self.n_local, period_frames=MANUAL)
        state = torch.from_numpy(flatten_state(self.module))
        self.averaging.setup([Replica(state.clone()) for _ in range(self.n_local)])

    @property
    def module(self) -> NnetModule:
        return self.learner.module

    def job(self, k: int) -> int:
        """Local replica k of this rank holds job k * ranks + rank (round robin)."""
        return k * self.comm.size + self.comm.rank

    def worker_job(self, worker: int) -> int:
        rank, k = divmod(worker, self.n_local)
        return k * self.comm.size + rank

    def run(self, it: int) -> dict:
        s = iteration_settings(self.params, it, model_saturation(self.comm, self.module))
        base = flatten_state(self.module)
        objectives: list[float | None] = [None] * self.n_local
        mine = []
        for k in range(self.n_local):
            job = self.job(k)
            if job >= s.num_jobs:
                continue
            load_flat_state(self.module, base)
            t0 = time.perf_counter()
            objf, frames, wait = self._train_job(s, job)
            seconds = time.perf_counter() - t0
            self.averaging.replicas[k].params.copy_(torch.from_numpy(flatten_state(self.module)))
            objectives[k] = _finite(objf)
            mine.append((job, objectives[k], frames, wait, seconds))
        comm_before = self.comm.stats.seconds   # from here on: waiting for the other ranks, and averaging
        jobs = sorted(r for part in self.comm.allgather_object(mine) for r in part)
        if it == 0:
            best = self.worker_job(self.averaging.select_best_(objectives))
            weights = {j: float(j == best) for j, *_ in jobs}
        else:
            mask = self.averaging.average_accepted_(objectives)
            accepted = [self.worker_job(w) for w, ok in enumerate(mask) if ok]
            weights = {j: (1.0 / len(accepted) if j in accepted else 0.0) for j, *_ in jobs}
        load_flat_state(self.module, self.averaging.replicas[0].params.numpy())
        set_learning_rates(self.module, s.lrate)
        return dict(iter=it, kind="select" if it == 0 else "average", num_jobs=s.num_jobs, lrate=s.lrate,
                    shrink=s.shrink, dropout=s.dropout, comm_seconds=self.comm.stats.seconds - comm_before,
                    **_per_job(jobs), weights=weights)

    def _train_job(self, s: IterationSettings, job: int) -> tuple[float, float, float]:
        params = self.params
        torch.manual_seed(params.args.trainer_srand * 100003 + s.it * 1009 + job)
        log = train_log(params, s, job)
        stream = job_stream(params, self.source, self.plan, s, job, self.report)
        with Prefetcher(stream, device=_prefetch_device(params)) as batches:
            self.learner.start(iter(batches), log, s.lrate, params.args.trainer_optimization_momentum,
                               s.max_change, 1.0 / s.num_jobs, shrink=s.shrink, dropout=s.dropout)
            self.learner.train_pass()
            wait = batches.wait_seconds
        _note_optimizer(log, self.learner.optimizer, wait)
        _write_log(params, log, s, job)
        return log.objf_per_frame, log.frames, wait

    def describe(self) -> str:
        return "Kaldi jobs (iteration 0 keeps the best job, later iterations average the accepted jobs)"

    def carry_state(self) -> dict:
        return {}

    def load_carry_state(self, state: dict) -> None:
        return None


class AlgorithmWorkers:
    """N workers stepped by a `kaldi_avg.parallel` algorithm; see the module docstring."""

    def __init__(self, params, comm: Communicator, algorithm: Algorithm, nnet, source, plan,
                 report: SkipReport) -> None:
        self.params, self.comm, self.algorithm = params, comm, algorithm
        self.source, self.plan, self.report = source, plan, report
        self.base_seed = algorithm.seed
        self.learners = [Learner(nnet, params.device, params.min_deriv_time) for _ in range(algorithm.n_local)]

    @property
    def module(self) -> NnetModule:
        """The reference model (every worker holds it between iterations)."""
        return self.learners[0].module

    def worker(self, k: int) -> int:
        return self.algorithm.first_worker + k

    def run(self, it: int) -> dict:
        params, algo = self.params, self.algorithm
        s = iteration_settings(params, it, model_saturation(self.comm, self.module))
        streams = [job_stream(params, self.source, self.plan, s, self.worker(k), self.report)
                   for k in range(len(self.learners))]
        steps = min(self.comm.allgather_object(min(len(st) for st in streams)))
        logs = [train_log(params, s, self.worker(k)) for k in range(len(self.learners))]
        prefetchers = [Prefetcher(st, device=_prefetch_device(params)) for st in streams]
        torch.manual_seed(params.args.trainer_srand * 100003 + it * 1009 + self.worker(0))
        momentum = params.args.trainer_optimization_momentum
        for learner, prefetcher, log in zip(self.learners, prefetchers, logs):
            learner.start(iter(prefetcher), log, s.lrate, momentum, s.max_change, 1.0 / s.num_jobs, shrink=s.shrink,
                          dropout=s.dropout)
        algo.seed = self.base_seed * 100003 + it   # new partner sequences every iteration, same on resume
        comm_before, t0 = self.comm.stats.seconds, time.perf_counter()
        try:
            self._steps(it, steps)
        finally:
            for prefetcher in prefetchers:
                prefetcher.close()
        comm_seconds, seconds = self.comm.stats.seconds - comm_before, time.perf_counter() - t0
        for k, (learner, stream, prefetcher, log) in enumerate(zip(self.learners, streams, prefetchers, logs)):
            if len(stream) > steps:
                log.note(f"{len(stream) - steps} minibatch(es) of this archive left for equal step counts")
            _note_optimizer(log, learner.optimizer, prefetcher.wait_seconds)
            _write_log(params, log, s, self.worker(k))
        for learner in self.learners:
            set_learning_rates(learner.module, s.lrate)
        share = seconds / len(self.learners)   # this rank's loop time, shared by its workers
        mine = [(self.worker(k), _finite(log.objf_per_frame), log.frames, p.wait_seconds, share)
                for k, (log, p) in enumerate(zip(logs, prefetchers))]
        jobs = sorted(r for part in self.comm.allgather_object(mine) for r in part)
        return dict(iter=it, kind="average", num_jobs=s.num_jobs, lrate=s.lrate, shrink=s.shrink, dropout=s.dropout,
                    steps=steps, comm_seconds=comm_seconds, algorithm=algo.describe(), **_per_job(jobs),
                    weights={j: 1.0 / len(jobs) for j, *_ in jobs})

    def _steps(self, it: int, steps: int) -> None:
        algo = self.algorithm
        if isinstance(algo, PostLocalSGD) and algo.warmup_frames is None and it >= 1:
            algo.local_phase = True   # Lin et al. switch at the first learning-rate decay: iteration 1
        if self.comm.size == 1:
            Simulator(algo, self.learners, seed=algo.seed).run(steps=steps)
            return
        algo.setup([learner.replica for learner in self.learners])
        for _ in range(steps):
            frames = [learner.backward() for learner in self.learners]
            algo.after_backward(frames)
            with algo.local_update():
                for learner in self.learners:
                    learner.update()
            algo.after_step(frames)
        algo.finalize()

    def describe(self) -> str:
        return str(self.algorithm.describe())

    def carry_state(self) -> dict:
        return self.algorithm.carry_state()

    def load_carry_state(self, state: dict) -> None:
        self.algorithm.load_carry_state(state)


def _per_job(jobs: list[tuple]) -> dict:
    """(job, objective, frames, data-wait s, train s) rows of every rank -> dicts by job."""
    return {key: {row[0]: row[i] for row in jobs}
            for i, key in enumerate(("objfs", "frames", "wait", "seconds"), start=1)}


def _prefetch_device(params) -> str | None:
    return params.device if params.device != "cpu" else None


def _note_optimizer(log: TrainLog, opt: KaldiSgd, wait: float) -> None:
    if opt.num_skipped:
        log.note(f"{opt.num_skipped} updates were skipped for a non-finite change")
    log.note(f"Per-component max-change was enforced {opt.num_max_change_applied} times; global "
             f"max-change {opt.num_global_max_change_applied} times; data wait {wait:.3f} s")
