"""The progress bar of the quiet stretches after the last iteration (train/progress.py): drawn on a
terminal only, advanced once per objective evaluation of the final combination."""
import io

import pytest
import torch

from kaldi_avg.model.graph import NnetModule
from kaldi_avg.train.combine import combine
from kaldi_avg.train.progress import Progress, progress_bar

from .test_batchnorm_stats import minibatches, network


class FakeTty(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_draws_on_a_terminal_and_reaches_its_total():
    stream = FakeTty()
    with Progress(5, "combining", "evaluations", stream=stream) as bar:
        assert bar.drawing
        for _ in range(5):
            bar.update()
    text = stream.getvalue()
    assert "combining" in text and "5/5" in text and "evaluations" in text
    assert "\r" in text and text.endswith("\n")
    assert bar.n == 5 and not bar.drawing


def test_the_bar_draws_nothing_where_the_stream_is_not_a_terminal():
    stream = io.StringIO()
    with Progress(3, "priors", "subsets", stream=stream) as bar:
        assert not bar.drawing
        bar.update()
        bar.update(n=2)
    assert stream.getvalue() == ""
    assert bar.n == 3


def test_a_closed_or_odd_stream_draws_nothing():
    closed = io.StringIO()
    closed.close()   # isatty() raises ValueError
    assert not Progress(2, "x", stream=closed).drawing
    assert not Progress(2, "x", stream=object()).drawing


@pytest.mark.parametrize("num_models, max_evaluations, want", [
    (4, 30, 4),     # the baseline and the averages of 2, 3 and 4
    (5, 2, 3),      # every 3rd addition: the baseline, n = 4 and n = K = 5
    (7, 3, 3),      # every 3rd: the baseline, n = 4, 7
    (6, 2, 3),      # every 3rd: the baseline, n = 4 and n = K = 6
])
def test_combination_advances_the_bar_once_per_evaluation(num_models, max_evaluations, want):
    stream, made = FakeTty(), []

    def factory(total):
        made.append(Progress(total, "combining", "evaluations", stream=stream))
        return made[-1]
    models = [NnetModule(network()) for _ in range(num_models)]
    _, result = combine(models, minibatches(2, seed=3), max_evaluations, progress=factory)
    [bar] = made
    assert len(result.evaluations) == want == bar.total == bar.n
    assert not bar.drawing   # closed by combine
    assert f"{want}/{want}" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_combination_without_a_bar_and_the_factory():
    models = [NnetModule(network()) for _ in range(3)]
    _, result = combine(models, minibatches(2, seed=3), 30)
    assert len(result.evaluations) == 3
    stream = FakeTty()
    bar = progress_bar("priors", "subsets", stream=stream)(2)
    bar.update(2)
    bar.close()
    assert "priors" in stream.getvalue() and "2/2" in stream.getvalue()


def test_one_model_is_the_result_without_an_evaluation():
    """nnet3-combine would score the newest model and keep it whatever the score: nothing to evaluate
    (no bar either), the BatchNorm statistics still recomputed on the combine set."""
    class Counting:
        outputs = ("output",)
        calls = 0

        def compute_prob(self, *args, **kwargs):
            Counting.calls += 1
    module = NnetModule(network())
    before = [p.detach().clone() for p in module.parameters()]
    lines, made = [], []
    best, result = combine([module], minibatches(2, seed=3), 30, lines.append, objective=Counting(),
                           progress=made.append)
    assert best is module and result.num_models == 1 and not result.evaluations
    assert Counting.calls == 0 and not made
    assert lines == ["Combining 1 model: the newest model is the result (not evaluated)"]
    assert all(torch.equal(a, b) for a, b in zip(before, best.parameters()))
    assert float(best.batchnorm_ops()[0].stats_count) > 0
