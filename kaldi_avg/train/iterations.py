"""What one training iteration does on every rank.

Two strategies share the driver's loop (diagnostics, N.mdl, resume, combination, priors); each takes
an `Iteration` of `schedule.plan()` and returns an `IterationResult`:

* `KaldiJobs` (`--averaging.algorithm ma` without a period: the default): Kaldi's iteration.
  num_jobs independent jobs start from the same shrunk model, round robin over the ranks (job j on
  rank j mod ranks, so the result does not depend on the number of ranks); iteration 0 keeps the
  best job, later iterations average the jobs within 1.0 of the best, parameters and component
  statistics alike, as nnet3-average does (`select_best_` / `average_accepted_` of
  `parallel.ModelAveraging.for_kaldi_jobs`).
* `AlgorithmWorkers` (any other algorithm, or `ma` with `--averaging.period-frames`): N =
  num-jobs-final workers, N / ranks per rank, each a `Learner` on its job's archive; the algorithm
  synchronizes them during the iteration (`after_backward` / `after_step`) and `finalize()` leaves
  its reference model in every worker at the end. With one rank the workers run under
  `parallel.Simulator` (its event clock orders the asynchronous algorithms' exchanges), so simulated
  N is the same code as real N. Every worker restarts from that reference model at the next
  iteration with a fresh optimizer, as Kaldi's jobs do: in-iteration state (BMUF's block momentum,
  gossip pairings) restarts too; phase switches (post-local SGD) carry over through
  `Algorithm.begin_iteration`.

Synchronous algorithms need equal step counts: every worker takes the minimum over the workers of
its archive's minibatch count (archives are balanced by frames, so a few minibatches at most are
left; they are counted in the train logs).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from ..data import ArchivePlan, ChunkConfig, MinibatchStream, Prefetcher, SkipReport, UtteranceSource
from ..data.chunking import frame_shift_offset
from ..kaldi.nnet3.saturation import saturation
from ..model.graph import NnetModule
from ..parallel import (
    Communicator,
    ModelAveraging,
    Replica,
    Simulator,
    algorithm_from_options,
    common_step_count,
)
from . import schedule
from .config import RunConfig
from .diagnostics import TrainLog
from .expdir import ExpDir
from .learner import Learner
from .objective import Objective
from .optim import KaldiSgd
from .schedule import Iteration


@dataclass(frozen=True)
class JobData:
    """What the jobs read and train towards: the corpus, its archives, how utterances become
    chunks, the objective."""

    source: UtteranceSource
    archives: ArchivePlan
    chunk_config: ChunkConfig
    min_deriv_time: int | None            # train_rnn.py: -(deriv-truncate-margin + model left context)
    max_deriv_time_relative: int | None   # deriv-truncate-margin + model right context (BLSTMs)
    report: SkipReport
    objective: Objective

    def learner(self, nnet, device: str) -> Learner:
        return Learner(nnet, device, self.min_deriv_time, self.max_deriv_time_relative, self.objective)


@dataclass(frozen=True)
class JobResult:
    job: int             # 0-based
    objf: float          # per frame; -inf when the job saw no frames
    frames: float
    data_wait: float     # seconds the job waited for minibatches
    seconds: float       # seconds the job trained


@dataclass
class IterationResult:
    iteration: Iteration
    kind: str                        # "select" (Kaldi's iteration 0) or "average"
    shrink: float
    jobs: list[JobResult]            # every rank's jobs, by job
    weights: dict[int, float]        # each job's weight in the model that goes on
    comm_seconds: float              # this rank's time in collectives
    steps: int | None = None         # synchronous steps per worker (algorithms)
    algorithm: dict = field(default_factory=dict)   # the algorithm's description (algorithms)
    objective_seconds: float = 0.0   # this rank's time in the objective beyond the network (chain: den, num)

    @property
    def best_objf(self) -> float:
        return max(job.objf for job in self.jobs)


def iteration_shrink(config: RunConfig, it: Iteration, model_saturation: float) -> float:
    t = config.trainer
    return schedule.shrink_value(it.index, it.learning_rate, model_saturation, t.shrink_value,
                                 t.shrink_saturation_threshold, t.proportional_shrink)


def model_saturation(comm: Communicator, module: NnetModule) -> float:
    """Rank 0's saturation of `module` (its statistics of the last iteration), so every rank agrees
    on the shrinkage."""
    module.write_back()
    return comm.allgather_object(saturation(module.nnet))[0]


def job_stream(config: RunConfig, data: JobData, it: Iteration, job: int) -> MinibatchStream:
    """The job's pass: train_dnn.py's jobs train one eg frame, chain/train.py's shift their egs
    (nnet3-chain-copy-egs --frame-shift)."""
    frame, shift = (it.frames[job] if it.frames else None), 0
    if config.chain is not None and frame is not None:
        frame, shift = None, frame_shift_offset(frame, config.chain.frame_subsampling_factor)
    return MinibatchStream.for_job(data.source, data.archives, data.chunk_config, it.minibatch_size, job=job,
                                   iteration=it.index, archives_processed=it.archives_processed,
                                   srand=config.trainer.srand, shuffle_buffer_size=config.trainer.shuffle_buffer_size,
                                   report=data.report, frame=frame, shift=shift)


def train_log(config: RunConfig, data: JobData, it: Iteration, job: int) -> TrainLog:
    t = config.trainer
    program = data.objective.train_program
    return TrainLog(f"{program} (kaldi-avg job {job + 1}, iteration {it.index}) "
                    f"--momentum={t.momentum} --max-param-change={it.max_param_change:g} "
                    f"--l2-regularize-factor={1.0 / it.num_jobs:g} --srand={it.index + t.srand} "
                    f"--learning-rate={it.learning_rate:g} --minibatch-size={it.minibatch_size} "
                    f"--optimization.min-deriv-time={data.min_deriv_time} "
                    f"--optimization.max-deriv-time-relative={data.max_deriv_time_relative}", program=program)


def start_job(config: RunConfig, learner: Learner, batches, log: TrainLog, it: Iteration, shrink: float) -> None:
    """The one place a job's optimizer settings come from: the iteration of the plan."""
    learner.start(batches, log, it.learning_rate, config.trainer.momentum, it.max_param_change, 1.0 / it.num_jobs,
                  shrink=shrink, dropout=it.dropout)


def job_seed(config: RunConfig, it: Iteration, job: int) -> int:
    return config.trainer.srand * 100003 + it.index * 1009 + job


def _finite(objf: float) -> float:
    return objf if math.isfinite(objf) else -math.inf


def _finish_log(config: RunConfig, log: TrainLog, opt: KaldiSgd, it: Iteration, job: int, wait: float) -> None:
    if opt.num_skipped:
        log.note(f"{opt.num_skipped} updates were skipped for a non-finite change")
    log.note(f"Per-component max-change was enforced {opt.num_max_change_applied} times; global "
             f"max-change {opt.num_global_max_change_applied} times; data wait {wait:.3f} s")
    log.write(ExpDir(config.dir).train_log(it.index, job + 1))


def _all_jobs(comm: Communicator, mine: list[JobResult]) -> list[JobResult]:
    return sorted((job for part in comm.allgather_object(mine) for job in part), key=lambda j: j.job)


def _prefetch_device(config: RunConfig) -> str | None:
    return config.device if config.device != "cpu" else None


class KaldiJobs:
    """Kaldi's iteration: independent jobs, then best-job selection or accepted averaging."""

    def __init__(self, config: RunConfig, comm: Communicator, data: JobData, nnet) -> None:
        self.config, self.comm, self.data = config, comm, data
        # one learner runs this rank's jobs in turn
        self.learner = data.learner(nnet, config.device)
        s = config.schedule
        self.n_local = math.ceil(max(s.num_jobs_initial, s.num_jobs_final) / comm.size)
        self.averaging = ModelAveraging.for_kaldi_jobs(comm, self.n_local, config.averaging.options)
        flat = self.learner.flat
        self.averaging.setup([Replica(flat.params.clone(), stats=None if flat.stats is None else flat.stats.clone())
                              for _ in range(self.n_local)])

    @property
    def module(self) -> NnetModule:
        return self.learner.module

    def job(self, k: int) -> int:
        """Local replica k of this rank holds job k * ranks + rank (round robin)."""
        return k * self.comm.size + self.comm.rank

    def worker_job(self, worker: int) -> int:
        rank, k = divmod(worker, self.n_local)
        return k * self.comm.size + rank

    def run(self, it: Iteration) -> IterationResult:
        shrink = iteration_shrink(self.config, it, model_saturation(self.comm, self.module))
        objective_before = self.data.objective.seconds
        flat = self.learner.flat
        base = flat.params.clone()
        objectives: list[float | None] = [None] * self.n_local
        mine = []
        for k in range(self.n_local):
            job = self.job(k)
            if job >= it.num_jobs:
                continue
            flat.params.copy_(base)
            result = self._train_job(it, shrink, job)
            replica = self.averaging.replicas[k]
            replica.params.copy_(flat.params)
            if flat.stats is not None:
                replica.stats.copy_(flat.stats)
            objectives[k] = result.objf
            mine.append(result)
        comm_before = self.comm.stats.seconds   # from here on: waiting for the other ranks, and averaging
        jobs = _all_jobs(self.comm, mine)
        if it.select_best:
            best = self.worker_job(self.averaging.select_best_(objectives))
            weights = {j.job: float(j.job == best) for j in jobs}
        else:
            mask = self.averaging.average_accepted_(objectives)
            accepted = [self.worker_job(w) for w, ok in enumerate(mask) if ok]
            weights = {j.job: (1.0 / len(accepted) if j.job in accepted else 0.0) for j in jobs}
        flat.params.copy_(self.averaging.replicas[0].params)
        if flat.stats is not None:
            flat.stats.copy_(self.averaging.replicas[0].stats)
        return IterationResult(it, "select" if it.select_best else "average", shrink, jobs, weights,
                               self.comm.stats.seconds - comm_before,
                               objective_seconds=self.data.objective.seconds - objective_before)

    def _train_job(self, it: Iteration, shrink: float, job: int) -> JobResult:
        torch.manual_seed(job_seed(self.config, it, job))
        log = train_log(self.config, self.data, it, job)
        stream = job_stream(self.config, self.data, it, job)
        t0 = time.perf_counter()
        with Prefetcher(stream, device=_prefetch_device(self.config)) as batches:
            start_job(self.config, self.learner, iter(batches), log, it, shrink)
            self.learner.train_pass()
            wait = batches.wait_seconds
        _finish_log(self.config, log, self.learner.optimizer, it, job, wait)
        return JobResult(job, _finite(log.objf_per_frame), log.frames, wait, time.perf_counter() - t0)

    def describe(self) -> str:
        return "Kaldi jobs (iteration 0 keeps the best job, later iterations average the accepted jobs)"

    def carry_state(self) -> dict:
        return {}

    def load_carry_state(self, state: dict) -> None:
        return None


class AlgorithmWorkers:
    """N workers stepped by a `kaldi_avg.parallel` algorithm; see the module docstring."""

    def __init__(self, config: RunConfig, comm: Communicator, data: JobData, nnet) -> None:
        self.config, self.comm, self.data = config, comm, data
        n_local = config.schedule.num_jobs_final // comm.size
        self.algorithm = algorithm_from_options(config.averaging.options, comm, n_local)
        self.base_seed = self.algorithm.seed
        self.learners = [data.learner(nnet, config.device) for _ in range(n_local)]

    @property
    def module(self) -> NnetModule:
        """The reference model (every worker holds it between iterations)."""
        return self.learners[0].module

    def worker(self, k: int) -> int:
        return self.algorithm.first_worker + k

    def run(self, it: Iteration) -> IterationResult:
        config, algo = self.config, self.algorithm
        shrink = iteration_shrink(config, it, model_saturation(self.comm, self.module))
        workers = [self.worker(k) for k in range(len(self.learners))]
        streams = [job_stream(config, self.data, it, w) for w in workers]
        steps = common_step_count(self.comm, min(len(st) for st in streams))
        logs = [train_log(config, self.data, it, w) for w in workers]
        prefetchers = [Prefetcher(st, device=_prefetch_device(config)) for st in streams]
        torch.manual_seed(job_seed(config, it, workers[0]))
        for learner, prefetcher, log in zip(self.learners, prefetchers, logs):
            start_job(config, learner, iter(prefetcher), log, it, shrink)
        # new partner sequences every iteration, the same on resume
        algo.begin_iteration(it.index, self.base_seed * 100003 + it.index)
        comm_before, t0 = self.comm.stats.seconds, time.perf_counter()
        objective_before = self.data.objective.seconds
        try:
            self._steps(steps)
        finally:
            for prefetcher in prefetchers:
                prefetcher.close()
        comm_seconds, seconds = self.comm.stats.seconds - comm_before, time.perf_counter() - t0
        share = seconds / len(self.learners)   # this rank's loop time, shared by its workers
        mine = []
        for worker, learner, stream, prefetcher, log in zip(workers, self.learners, streams, prefetchers, logs):
            if len(stream) > steps:
                log.note(f"{len(stream) - steps} minibatch(es) of this archive left for equal step counts")
            _finish_log(config, log, learner.optimizer, it, worker, prefetcher.wait_seconds)
            mine.append(JobResult(worker, _finite(log.objf_per_frame), log.frames, prefetcher.wait_seconds, share))
        jobs = _all_jobs(self.comm, mine)
        return IterationResult(it, "average", shrink, jobs, {j.job: 1.0 / len(jobs) for j in jobs}, comm_seconds,
                               steps=steps, algorithm=algo.describe(),
                               objective_seconds=self.data.objective.seconds - objective_before)

    def _steps(self, steps: int) -> None:
        algo = self.algorithm
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


def make_iterations(config: RunConfig, comm: Communicator, data: JobData, nnet) -> KaldiJobs | AlgorithmWorkers:
    """The strategy the options ask for, starting from `nnet`."""
    strategy = KaldiJobs if config.averaging.kaldi_jobs else AlgorithmWorkers
    return strategy(config, comm, data, nnet)
