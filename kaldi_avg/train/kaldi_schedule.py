"""Kaldi's train_rnn.py schedule formulas (kaldi-interface.md 6.4, 6.6), one function each.

Stand-in until `kaldi_avg/train/schedule.py` exists; the driver only calls these functions.
"""
from __future__ import annotations

import math


def num_iters(num_epochs: float, num_archives: int, num_jobs_initial: int, num_jobs_final: int) -> int:
    to_process = int(num_epochs * num_archives)
    return int(to_process * 2 / (num_jobs_initial + num_jobs_final))


def num_jobs(it: int, total_iters: int, num_jobs_initial: int, num_jobs_final: int, step: int = 1) -> int:
    ideal = num_jobs_initial + (num_jobs_final - num_jobs_initial) * it / max(total_iters, 1)
    if ideal < step:
        return int(0.5 + ideal)
    return int(0.5 + ideal / step) * step


def effective_lrate(it: int, total_iters: int, archives_processed: int, archives_to_process: int,
                    initial: float, final: float) -> float:
    if it + 1 >= total_iters:
        return final
    return initial * math.exp(archives_processed * math.log(final / initial) / archives_to_process)


def learning_rate(it: int, total_iters: int, archives_processed: int, archives_to_process: int,
                  initial: float, final: float, jobs: int) -> float:
    """The per-job learning rate: num_jobs x effective learning rate."""
    return jobs * effective_lrate(it, total_iters, archives_processed, archives_to_process, initial, final)


def shrink(it: int, lrate: float, shrink_value: float, proportional_shrink: float = 0.0,
           saturation: float = 0.0, threshold: float = 0.40) -> float:
    value = 1.0 - proportional_shrink * lrate
    if value <= 0.5:
        raise ValueError(f"proportional shrink gives {value} <= 0.5: lower --trainer.optimization.proportional-shrink")
    if shrink_value < value:
        return shrink_value if (it == 0 or saturation > threshold) else 1.0
    return value


def archives_processed_before(it: int, total_iters: int, num_jobs_initial: int, num_jobs_final: int,
                              step: int = 1) -> int:
    return sum(num_jobs(i, total_iters, num_jobs_initial, num_jobs_final, step) for i in range(it))


def models_to_combine(total_iters: int, num_archives: int, num_jobs_final: int,
                      max_models_combine: int = 20) -> list[int]:
    """Iterations whose models enter the final combination (ascending, always ending with total_iters)."""
    approx = num_archives / num_jobs_final
    n0 = min(int(approx / 2) + 1, int(total_iters / 2))
    if n0 > max_models_combine:
        sub = n0 // max_models_combine
        iters = set(range(total_iters - n0 + 1, total_iters + 1, sub))
    else:
        n = min(max_models_combine, total_iters // 2)
        iters = set(range(total_iters - n + 1, total_iters + 1))
    iters.add(total_iters)
    return sorted(i for i in iters if i >= 0)
