"""Kaldi's outer training schedule (steps/nnet3/train_rnn.py, train_dnn.py and
steps/libs/nnet3/train/common.py), as pure functions with the same arithmetic, so a run here takes the
same iterations, job counts, learning rates, shrinkage and combination set as Kaldi would.

Terms: an *archive* is one job's data for one iteration; iteration `it` runs `num_jobs(it)` jobs in
parallel from the same model, each on one archive; `archives_processed` counts archives consumed
before the iteration. train_dnn.py's egs hold frames-per-eg frames of which a job trains one (`eg_frame`),
so a pass over the data takes frames-per-eg passes over the archives ("expanded" archives).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..data.merging import halve_minibatch_size
from .dropout import DropoutSchedule, dropout_proportions


def num_archives_to_process(num_epochs: float, num_archives: int) -> int:
    """int(num_epochs × num_archives) (train_rnn.py)."""
    return int(num_epochs * num_archives)


def num_iters(archives_to_process: int, num_jobs_initial: int, num_jobs_final: int) -> int:
    """Iterations such that the data is seen num_epochs times with the job ramp:
    int(archives_to_process × 2 / (nj_initial + nj_final))."""
    return int(archives_to_process * 2 / (num_jobs_initial + num_jobs_final))


def num_jobs(iteration: int, iterations: int, num_jobs_initial: int, num_jobs_final: int,
             num_jobs_step: int = 1) -> int:
    """`get_current_num_jobs`: the linear ramp from nj_initial to nj_final, rounded to the nearest
    integer below num_jobs_step and to a multiple of num_jobs_step above it."""
    ideal = float(num_jobs_initial) + (num_jobs_final - num_jobs_initial) * float(iteration) / iterations
    if ideal < num_jobs_step:
        return int(0.5 + ideal)
    return int(0.5 + ideal / num_jobs_step) * num_jobs_step


def effective_learning_rate(iteration: int, iterations: int, archives_processed: int,
                            archives_to_process: int, initial_effective_lrate: float,
                            final_effective_lrate: float) -> float:
    """Geometric decay from initial to final by the fraction of archives processed; exactly the final
    value on the last iteration (`get_learning_rate` before its multiplication by num_jobs)."""
    if iteration + 1 >= iterations:
        return final_effective_lrate
    return geometric_decay(archives_processed / archives_to_process, initial_effective_lrate,
                           final_effective_lrate)


def geometric_decay(fraction: float, initial: float, final: float) -> float:
    """initial at fraction 0, final at 1, geometric in between (Kaldi's learning-rate decay)."""
    return initial * math.exp(fraction * math.log(float(final) / initial))


def learning_rate(iteration: int, jobs: int, iterations: int, archives_processed: int,
                  archives_to_process: int, initial_effective_lrate: float, final_effective_lrate: float) -> float:
    """`get_learning_rate`: the rate each job trains with, jobs × effective rate (compensating for
    the average of `jobs` models, each updated from the same point)."""
    return jobs * effective_learning_rate(iteration, iterations, archives_processed, archives_to_process,
                                          initial_effective_lrate, final_effective_lrate)


def shrink_value(iteration: int, lrate: float, saturation: float | None, shrink: float = 0.99,
                 shrink_saturation_threshold: float = 0.40, proportional_shrink: float = 0.0) -> float:
    """The parameter scale for this iteration (train_rnn.py): 1 − proportional_shrink × lrate, replaced
    by `shrink` when that is smaller and `should_do_shrinkage` holds (always on iteration 0, otherwise
    when the model's sigmoid/tanh `saturation` exceeds the threshold). Saturation may be None on
    iteration 0, where it is not consulted."""
    value = 1.0 - proportional_shrink * lrate
    if value <= 0.5:
        raise ValueError(f"proportional-shrink={proportional_shrink} is too large, it gives shrink-value={value}")
    if shrink < value:
        if iteration == 0:
            return shrink
        if saturation is None:
            raise ValueError("the saturation of the current model is needed after iteration 0")
        if saturation > shrink_saturation_threshold:
            return shrink
    return value


def models_to_combine(iterations: int, num_archives: int, max_models_combine: int,
                      num_jobs_final: int) -> set[int]:
    """`get_model_combine_iters`: the iterations whose models enter the final combination.

    Up to half an epoch at the final job count (plus one) and at most half the iterations; when that
    is more than max_models_combine, every ⌊n/max⌋-th of them; the last iteration always."""
    approx_iters_per_epoch_final = float(num_archives) / num_jobs_final
    initial = min(int(approx_iters_per_epoch_final / 2) + 1, int(iterations / 2))
    if initial > max_models_combine:
        subsample = int(float(initial) / max_models_combine)
        chosen = set(range(iterations - initial + 1, iterations + 1, subsample))
        chosen.add(iterations)
        return chosen
    count = min(max_models_combine, iterations // 2)
    return set(range(iterations - count + 1, iterations + 1)) | {iterations}


def archive_index(archives_processed: int, job: int, num_archives: int) -> int:
    """1-based archive of 1-based `job` in an iteration: ((processed + job − 1) mod A) + 1."""
    return (archives_processed + job - 1) % num_archives + 1


def eg_frame(archives_processed: int, job: int, num_archives: int, frames_per_eg: int) -> int:
    """train_dnn.py: the frame of each eg that 1-based `job` trains (nnet3-copy-egs --frame), a
    different one on each pass over the archives: (k // A + archive index) mod frames-per-eg with
    k = processed + job - 1."""
    k = archives_processed + job - 1
    return (k // num_archives + archive_index(archives_processed, job, num_archives)) % frames_per_eg


def max_param_change(iteration: int, value: float) -> float:
    """Iteration 0 divides max-param-change by √2 (train_one_iteration)."""
    return value / math.sqrt(2.0) if iteration == 0 else value


@dataclass(frozen=True)
class ScheduleOptions:
    """The options of train_rnn.py that fix the schedule; defaults are train_rnn.py's own."""

    num_epochs: float = 8.0
    num_jobs_initial: int = 1
    num_jobs_final: int = 8
    num_jobs_step: int = 1
    initial_effective_lrate: float = 0.0003
    final_effective_lrate: float = 0.00003
    max_param_change: float = 2.0
    minibatch_size: str = "100"                        # --trainer.rnn.num-chunk-per-minibatch
    dropout: tuple[DropoutSchedule, ...] = ()          # --trainer.dropout-schedule, parsed
    max_models_combine: int = 20
    frames_per_eg: int | None = None                   # train_dnn.py's --egs.frames-per-eg; None: train_rnn.py


@dataclass(frozen=True)
class Iteration:
    """Everything the options decide about one iteration; shrinkage alone depends on the model
    (`shrink_value`), so the loop computes it when the iteration starts."""

    index: int
    num_jobs: int
    archives_processed: int
    learning_rate: float                         # what each job trains with: num_jobs x effective rate
    archives: tuple[int, ...]                    # 1-based archive index of each job
    select_best: bool                            # iteration 0 keeps the best job's model
    max_param_change: float
    minibatch_size: str                          # iteration 0 halves it
    dropout: tuple[tuple[str, float], ...] = ()  # set-dropout-proportion edits (pattern, proportion)
    frames: tuple[int, ...] = ()                 # train_dnn.py: the eg frame each job trains (0-based)


def expanded_archives(options: ScheduleOptions, num_archives: int) -> int:
    """The archives one pass over the data takes: num_archives x frames-per-eg for train_dnn.py."""
    return num_archives * (options.frames_per_eg or 1)


def plan(options: ScheduleOptions, num_archives: int) -> list[Iteration]:
    """Every iteration of a train_rnn.py (or train_dnn.py) run with these options over `num_archives`
    archives: the only schedule the training loop follows."""
    to_process = num_archives_to_process(options.num_epochs, expanded_archives(options, num_archives))
    iterations = num_iters(to_process, options.num_jobs_initial, options.num_jobs_final)
    out = []
    processed = 0
    for it in range(iterations):
        jobs = num_jobs(it, iterations, options.num_jobs_initial, options.num_jobs_final, options.num_jobs_step)
        lr = learning_rate(it, jobs, iterations, processed, to_process, options.initial_effective_lrate,
                           options.final_effective_lrate)
        archives = tuple(archive_index(processed, job, num_archives) for job in range(1, jobs + 1))
        frames = () if options.frames_per_eg is None else \
            tuple(eg_frame(processed, job, num_archives, options.frames_per_eg) for job in range(1, jobs + 1))
        # the dropout schedule is read at the fraction of the data processed before the iteration
        dropout = tuple(dropout_proportions(list(options.dropout), processed / to_process)) if options.dropout else ()
        out.append(Iteration(it, jobs, processed, lr, archives, it == 0,
                             max_param_change(it, options.max_param_change),
                             halve_minibatch_size(options.minibatch_size) if it == 0 else options.minibatch_size,
                             dropout, frames))
        processed += jobs
    return out


def combine_iterations(options: ScheduleOptions, iterations: Sequence[Iteration], num_archives: int) -> set[int]:
    """The models (by iteration number, N.mdl) that enter the final combination."""
    return models_to_combine(len(iterations), expanded_archives(options, num_archives), options.max_models_combine,
                             options.num_jobs_final)
