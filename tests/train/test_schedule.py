"""Kaldi's schedule: reference values from Kaldi's own unit tests and hand computations of its formulas."""
from __future__ import annotations

import math

import pytest

from kaldi_avg.data import halve_minibatch_size
from kaldi_avg.train import schedule


def test_num_jobs_matches_kaldis_test_get_current_num_jobs():
    # egs/wsj/s5/steps/libs/nnet3/train/common.py, SelfTest.test_get_current_num_jobs
    assert [schedule.num_jobs(i, 12, 2, 9, 1) for i in range(12)] == [2, 3, 3, 4, 4, 5, 6, 6, 7, 7, 8, 8]
    assert [schedule.num_jobs(i, 12, 2, 9, 3) for i in range(12)] == [2, 3, 3, 3, 3, 6, 6, 6, 6, 6, 9, 9]


def test_halving_matches_kaldis_self_test():
    # common.py self_test() / test_halve_minibatch_size_str
    assert halve_minibatch_size("64") == "32"
    assert halve_minibatch_size("64,16:32") == "32,8:16"
    assert halve_minibatch_size("1") == "1"
    assert halve_minibatch_size("128=64/256=40,80:100") == "128=32/256=20,40:50"


def test_iteration_count():
    # 10 archives, 2 epochs, 1 → 3 jobs: int(20·2/4) = 10 iterations; fractional epochs truncate.
    assert schedule.num_archives_to_process(2, 10) == 20
    assert schedule.num_iters(20, 1, 3) == 10
    assert schedule.num_archives_to_process(1.55, 10) == 15
    assert schedule.num_iters(15, 1, 8) == 3           # int(30/9)


def test_plan_by_hand():
    """A = 10, E = 2, nj 1 → 3, η_eff 3e-4 → 3e-5 (train_rnn.py's defaults)."""
    plan = schedule.plan(schedule.ScheduleOptions(num_epochs=2, num_jobs_initial=1, num_jobs_final=3), 10)
    # ideal = 1 + 2·it/10 = 1.0 1.2 1.4 1.6 1.8 2.0 2.2 2.4 2.6 2.8, rounded with int(0.5 + ideal)
    assert [it.num_jobs for it in plan] == [1, 1, 1, 2, 2, 2, 2, 2, 3, 3]
    assert [it.archives_processed for it in plan] == [0, 1, 2, 3, 5, 7, 9, 11, 13, 16]
    assert plan[0].learning_rate == pytest.approx(0.0003)
    # it 3: 2 jobs × 3e-4 · exp(3 · ln(0.1) / 20) = 6e-4 · 10^(−0.15)
    assert plan[3].learning_rate == pytest.approx(2 * 0.0003 * 10 ** -0.15)
    assert plan[8].learning_rate == pytest.approx(3 * 0.0003 * 10 ** (-13 / 20))
    assert plan[9].learning_rate == pytest.approx(3 * 0.00003)   # the last iteration uses the final rate
    assert plan[0].select_best and not any(it.select_best for it in plan[1:])
    # archives go round robin: job j of an iteration reads ((processed + j − 1) mod A) + 1
    assert plan[3].archives == (4, 5) and plan[9].archives == (7, 8, 9)
    assert schedule.archive_index(19, 2, 10) == 1
    # iteration 0 halves the minibatch and divides max-param-change by sqrt(2), as train_rnn.py
    assert plan[0].minibatch_size == "50" and plan[1].minibatch_size == "100"
    assert plan[0].max_param_change == pytest.approx(2.0 / math.sqrt(2)) and plan[1].max_param_change == 2.0


def test_effective_learning_rate_decays_geometrically_by_data_processed():
    rates = [schedule.effective_learning_rate(0, 100, p, 400, 0.0003, 0.00003) for p in (0, 200, 400)]
    assert rates[0] == pytest.approx(0.0003)
    assert rates[1] == pytest.approx(0.0003 * math.sqrt(0.1))
    assert rates[2] == pytest.approx(0.00003)
    assert schedule.learning_rate(10, 4, 100, 200, 400, 0.0003, 0.00003) == pytest.approx(4 * rates[1])


def test_shrinkage_rules_of_train_rnn():
    # iteration 0 always shrinks by shrink-value; later only when saturated beyond the threshold
    assert schedule.shrink_value(0, 0.001, None) == 0.99
    assert schedule.shrink_value(5, 0.001, 0.41) == 0.99
    assert schedule.shrink_value(5, 0.001, 0.40) == 1.0
    # proportional shrink: 1 − c·lr, and shrink-value only if smaller
    assert schedule.shrink_value(5, 0.002, 0.1, proportional_shrink=2.0) == pytest.approx(0.996)
    assert schedule.shrink_value(5, 0.01, 0.9, proportional_shrink=2.0) == pytest.approx(0.98)
    with pytest.raises(ValueError):
        schedule.shrink_value(5, 0.3, 0.1, proportional_shrink=2.0)
    with pytest.raises(ValueError):
        schedule.shrink_value(5, 0.001, None)


def test_models_to_combine_by_hand():
    # few iterations: the last min(max, iters // 2) models
    assert schedule.models_to_combine(10, 10, 20, 3) == {6, 7, 8, 9, 10}
    # approx iters per epoch = 1000/2 = 500 → n0 = min(251, 200) = 200 > 20: every 10th from 201, plus 400
    chosen = schedule.models_to_combine(400, 1000, 20, 2)
    assert chosen == set(range(201, 401, 10)) | {400}
    # half an epoch bounds it: 40/8 = 5 → n0 = min(3, 50) = 3 ≤ 20 → the last min(20, 50) = 20 iterations
    assert schedule.models_to_combine(100, 40, 20, 8) == set(range(81, 101))


def test_max_param_change_on_iteration_zero():
    assert schedule.max_param_change(0, 2.0) == pytest.approx(math.sqrt(2.0))
    assert schedule.max_param_change(1, 2.0) == 2.0
