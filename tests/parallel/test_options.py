"""`--averaging.*` options: every algorithm can be chosen and configured from the command line."""
from __future__ import annotations

import argparse

import pytest

from kaldi_avg.parallel import (
    ALGORITHMS,
    MANUAL,
    LocalCommunicator,
    Option,
    add_algorithm_options,
    build_algorithm,
    make_algorithm,
    registry,
)


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_algorithm_options(parser)
    return parser.parse_args(list(argv))


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


def test_a_shared_option_must_be_declared_the_same_way(monkeypatch):
    class Clash(ALGORITHMS["ma"]):
        name = "clash"
        OPTIONS = (Option("pairing", int, 3, "a different pairing"),)

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
    for option in _all_options():
        assert f"`--averaging.{option}`" in text, option
