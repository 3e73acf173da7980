"""--trainer.dropout-schedule: Kaldi's syntax, the piecewise-linear value over the data fraction,
and the fraction train_rnn.py uses (archives processed before the iteration / archives to process)."""
import dataclasses

import pytest

from kaldi_avg.train import schedule
from kaldi_avg.train.dropout import (
    DropoutSchedule,
    DropoutScheduleError,
    describe,
    dropout_proportions,
    parse_dropout_schedule,
)
from kaldi_avg.train.schedule import ScheduleOptions


def values(text: str, fraction: float) -> list[tuple[str, float]]:
    return dropout_proportions(parse_dropout_schedule(text), fraction)


def test_parse_gives_points_from_fraction_0_to_1():
    assert parse_dropout_schedule("0,0@0.20,0.3@0.50,0") == [
        DropoutSchedule("*", ((0.0, 0.0), (0.2, 0.0), (0.5, 0.3), (1.0, 0.0)))]
    # a bare middle value sits at half the data; several schedules are separated by blanks
    assert parse_dropout_schedule("0.1,0.5,0.2  lstm*=0.2,0.2@0.5,0") == [
        DropoutSchedule("*", ((0.0, 0.1), (0.5, 0.5), (1.0, 0.2))),
        DropoutSchedule("lstm*", ((0.0, 0.2), (0.5, 0.2), (1.0, 0.0)))]


@pytest.mark.parametrize("fraction,expected", [
    (0.0, 0.0), (0.1, 0.0), (0.2, 0.0),
    (0.35, 0.15),        # halfway from (0.2, 0) to (0.5, 0.3)
    (0.5, 0.3),
    (0.6, 0.24),         # a fifth of the way from (0.5, 0.3) to (1, 0)
    (1.0, 0.0)])
def test_piecewise_linear_in_the_data_fraction(fraction, expected):
    [(pattern, p)] = values("0,0@0.20,0.3@0.50,0", fraction)
    assert pattern == "*" and p == pytest.approx(expected)


def test_patterns_and_steps():
    assert values("lstm*=0.2,0.2@0.5,0 *=0,0.4,0", 0.75) == [("lstm*", pytest.approx(0.1)),
                                                             ("*", pytest.approx(0.2))]
    # a repeated fraction is a step: the later point holds from there on
    step = "0,0.3@0.5,0.6@0.5,0"
    assert values(step, 0.25)[0][1] == pytest.approx(0.15)
    assert values(step, 0.5)[0][1] == pytest.approx(0.6)
    assert values(step, 0.75)[0][1] == pytest.approx(0.3)
    # at fraction 0 the first value counts even when more points sit at 0
    assert values("0.1,0.5@0,0.2", 0.0)[0][1] == pytest.approx(0.1)
    assert values("0.1,0.5@0,0.2", 0.5)[0][1] == pytest.approx(0.35)


def test_describe_is_kaldis_log_text():
    assert describe([("*", 0.25), ("lstm*", 0.1)]) == \
        "pattern/dropout-proportion=*/0.25, pattern/dropout-proportion=lstm*/0.1"


@pytest.mark.parametrize("text", ["0.2", "", "a=b=0,0", "0,x,0", "0,0.3@0.6,0.2@0.4,0", "0,0.3@1.5,0",
                                  "0,1.2,0", "0,0.3@,0", "0,0.3@0.2@0.4,0", "-0.1,0"])
def test_malformed_schedules_name_the_option(text):
    with pytest.raises(DropoutScheduleError, match="--trainer.dropout-schedule"):
        parse_dropout_schedule(text)


def test_iteration_fraction_is_archives_processed_over_archives_to_process():
    """3 archives, 2 epochs, num-jobs 1 -> 2 over 4 iterations: jobs 1, 1, 2, 2 (int(0.5 + 1 + it/4)),
    so 0, 1, 2 and 4 of the 6 archives are processed before iterations 0..3."""
    options = ScheduleOptions(num_epochs=2, num_jobs_initial=1, num_jobs_final=2,
                              dropout=tuple(parse_dropout_schedule("0,0.6,0")))
    plan = schedule.plan(options, num_archives=3)
    assert [it.num_jobs for it in plan] == [1, 1, 2, 2]
    expected = [0.0, 0.6 * (1 / 6) / 0.5, 0.6 * (2 / 6) / 0.5, 0.6 * (1 - 4 / 6) / 0.5]
    assert [it.dropout[0][1] for it in plan] == pytest.approx(expected)
    assert all(it.dropout == () for it in schedule.plan(dataclasses.replace(options, dropout=()), 3))
