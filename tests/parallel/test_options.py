"""`--averaging.*` options: every algorithm can be chosen and configured from the command line."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from kaldi_avg.parallel import (
    ALGORITHMS,
    MANUAL,
    AlgorithmOptions,
    LocalCommunicator,
    ModelAveraging,
    add_algorithm_options,
    algorithm_from_options,
    algorithm_options,
    make_algorithm,
    option,
    registry,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_algorithm_options(parser)
    return parser.parse_args(list(argv))


def build_algorithm(args, comm, n_local=1):
    """The algorithm chosen on the command line, as the training driver builds it."""
    return algorithm_from_options(algorithm_options(args), comm, n_local)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_builds_from_the_command_line_with_its_paper_defaults(name):
    argv = ["--averaging.algorithm", name]
    if name == "hadpsgd":
        argv += ["--averaging.group-size", "2"]
    algorithm = build_algorithm(parse(*argv), LocalCommunicator(), n_local=4)
    assert algorithm.name == name and algorithm.n_workers == 4
    assert algorithm.period_frames == ALGORITHMS[name].DEFAULT_PERIOD_FRAMES
    assert algorithm.describe()["algorithm"] == name


def test_options_reach_the_algorithm():
    args = parse("--averaging.algorithm", "bmuf", "--averaging.period-frames", "400000",
                 "--averaging.block-momentum", "0.5", "--averaging.bmuf-nesterov", "true",
                 "--averaging.local-optimizer-state", "reset")
    algorithm = build_algorithm(args, LocalCommunicator(), 2)
    described = algorithm.describe()
    assert (described["period_frames"], described["block_momentum"], described["nesterov"],
            described["local_optimizer_state"]) == (400000, 0.5, True, "reset")
    easgd = build_algorithm(parse("--averaging.algorithm", "easgd"), LocalCommunicator(), 3)
    assert easgd.alpha == pytest.approx(0.3) and easgd.beta == pytest.approx(0.9)


def test_manual_period_and_invalid_values():
    assert parse("--averaging.period-frames", "manual").averaging_period_frames is MANUAL
    with pytest.raises(SystemExit):
        parse("--averaging.period-frames", "-5")
    with pytest.raises(SystemExit):
        parse("--averaging.algorithm", "gossip-everything")
    with pytest.raises(ValueError):
        make_algorithm("nope", LocalCommunicator())
    with pytest.raises(ValueError):
        make_algorithm("ma", LocalCommunicator(), ma_weighting="median")


def test_only_model_averaging_without_a_period_runs_kaldis_jobs():
    kaldi = algorithm_options(parse())
    assert kaldi.kaldi_jobs and not algorithm_options(parse("--averaging.period-frames", "25600")).kaldi_jobs
    others = [algorithm_options(parse("--averaging.algorithm", name)) for name in sorted(ALGORITHMS) if name != "ma"]
    assert not any(options.kaldi_jobs for options in others)
    assert ModelAveraging.for_kaldi_jobs(LocalCommunicator(), 2, kaldi).period_frames is MANUAL
    with pytest.raises(ValueError):
        ModelAveraging.for_kaldi_jobs(LocalCommunicator(), 2, others[0])


def test_a_shared_option_must_be_declared_the_same_way(monkeypatch):
    @dataclass(frozen=True, kw_only=True)
    class ClashOptions(AlgorithmOptions):
        pairing: int = option(3, "a different pairing")

    class Clash(ALGORITHMS["ma"]):
        name = "clash"
        Options = ClashOptions

    monkeypatch.setitem(registry.ALGORITHMS, "clash", Clash)
    with pytest.raises(TypeError):
        add_algorithm_options(argparse.ArgumentParser())


def test_training_docs_list_every_algorithm_and_option():
    """docs/training.md is the user's reference for --averaging.*: nothing may be missing from it."""
    import os

    from kaldi_avg.parallel.registry import ALGORITHMS, _all_options
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "training.md")
    text = open(path).read()
    for name in ALGORITHMS:
        assert f"| `{name}` |" in text, name
    for name in _all_options():
        assert f"`--averaging.{name}`" in text, name
