"""Smoke tests of `kaldi-avg experiment`: the runner on a tiny in-memory corpus, the outputs' schema,
the recipe mirror and E6's fit. The real experiments take minutes and are run by hand (docs/results.md)."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from kaldi_avg import cli
from kaldi_avg.experiments import command, commbench, dataset, matrix, prepare, runner
from kaldi_avg.experiments.runner import RunSpec, Settings
from tests.data.synthetic import corpus_lengths, make_source

ROW_FIELDS = {"experiment", "algorithm", "N", "seed", "period_frames", "chunks_per_minibatch", "frames",
              "valid_objf", "valid_accuracy", "sim_wall_seconds", "measured_seconds", "comm_seconds", "curve"}


@pytest.fixture(scope="module")
def tiny():
    source = make_source(corpus_lengths(24, seed=3, low=30, high=60))
    return dataset.from_source(dataset.in_memory(source), cell_dim=4, num_archives=2, description="tiny")


def tiny_specs(experiment: str = "E2") -> list[RunSpec]:
    common = dict(chunks=4, epochs=0.5, evaluations=2)
    return [RunSpec(experiment, runner.SINGLE, runner.SINGLE, 1, **common),
            RunSpec(experiment, "ma (bsp)", "ma", 2, options={"period_frames": 80}, lr_scale=2.0, **common),
            RunSpec(experiment, "asgd", "asgd", 2, options={"period_frames": 80}, **common)]


def test_runner_rows_have_the_schema(tiny):
    rows = runner.run_all(tiny_specs(), tiny, Settings(), jobs=1, log=lambda _: None)
    assert [r["algorithm"] for r in rows] == [runner.SINGLE, "ma (bsp)", "asgd"]
    for r in rows:
        assert ROW_FIELDS <= set(r)
        assert len(r["curve"]) == 2 and r["frames"] > 0 and math.isfinite(r["valid_objf"])
        assert 0.0 <= r["valid_accuracy"] <= 1.0
    assert rows[0]["comm_seconds"] == 0.0          # one worker never communicates
    assert rows[1]["comm"]["calls"].get("allreduce", 0) > 0
    assert rows[2]["comm"]["calls"].get("server", 0) > 0


def test_runs_are_reproducible(tiny):
    spec = tiny_specs()[1]
    first, second = (runner.run(spec, tiny, Settings()) for _ in range(2))
    assert first["valid_objf"] == second["valid_objf"]
    assert first["sim_wall_seconds"] == second["sim_wall_seconds"]


def test_outputs_are_json_png_and_table(tiny, tmp_path):
    rows = runner.run_all(tiny_specs(), tiny, Settings(), jobs=2, log=lambda _: None)
    paths = command.write_outputs("E2", rows, str(tmp_path), quick=True)
    loaded = json.loads(open(paths["json"]).read())
    assert len(loaded) == 3 and ROW_FIELDS <= set(loaded[1])
    with open(paths["png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| ma (bsp) | 2 |" in open(paths["md"]).read()


def test_reference_model_is_the_algorithms_output(tiny):
    spec = RunSpec("E2", "bmuf", "bmuf", 2, options={"period_frames": 80}, chunks=4)
    algorithm = runner.build_algorithm(spec)
    learners = [runner.Learner(tiny.build_nnet(0)) for _ in range(2)]
    runner.Simulator(algorithm, learners)
    algorithm.model.add_(1.0)   # the global model, not the workers' mean
    assert torch.equal(algorithm.reference_params(), algorithm.model)
    ma = runner.build_algorithm(RunSpec("E2", "ma", "ma", 2, chunks=4))
    runner.Simulator(ma, learners)
    learners[1].flat.params.add_(2.0)
    assert torch.allclose(ma.reference_params(), learners[0].flat.params + 1.0)


def test_step_budget_spends_the_frames(tiny):
    spec = RunSpec("E1", "ma", "ma", 2, chunks=4, epochs=2.0, evaluations=3)
    expected = 2.0 * tiny.train_frames / (2 * 4 * tiny.mean_chunk_frames)
    assert abs(runner.total_steps(spec, tiny) - expected) <= 1


def test_time_budget_is_the_step_budget_in_simulated_seconds(tiny):
    settings = Settings()
    spec = RunSpec("E1", "ma", "ma", 2, chunks=1, epochs=1.0, evaluations=1)   # many steps: little rounding
    seconds = runner.total_steps(spec, tiny) * runner.step_seconds(tiny, 1, settings)
    budget = matrix.e5_seconds(1.0, tiny.train_frames, 2, settings.frames_per_s)
    assert budget == pytest.approx(seconds, rel=0.05)


def test_time_budget_run_evaluates_along_the_clock(tiny):
    spec = RunSpec("E5", "random ring", "adpsgd", 2, lr_scale=2.0, chunks=4, sim_seconds=0.2, evaluations=3,
                   slowdown={0: 2.0})
    r = runner.run(spec, tiny, Settings())
    times = [p["sim_seconds"] for p in r["curve"]]
    assert len(times) == 3 and times == sorted(times) and times[-1] >= 0.2
    assert r["steps_per_worker"] > 0


def test_minibatch_larger_than_every_archive_is_an_error(tiny):
    with pytest.raises(ValueError, match="no archive holds a minibatch"):
        next(runner.worker_batches(tiny, 0, 2, 10_000, 0))


def test_matrix_quick_grids_are_small():
    assert len(matrix.specs_e1(True)) <= 20 and len(matrix.specs_e2(True)) <= 30
    assert {s.workers for s in matrix.specs_e2(False)} == {1, 2, 4, 8, 16}
    assert len(matrix.specs_e1(True)) == 13
    assert all(s.sim_seconds for s in matrix.specs_e5(True, 100_000, 10_000.0))


def test_corpus_choice(tmp_path):
    assert prepare.choose_corpus(None, str(tmp_path)) == "synth"
    os.makedirs(tmp_path / "recordings")
    assert prepare.choose_corpus(None, str(tmp_path)) == "fsdd"
    with pytest.raises(ValueError):
        prepare.choose_corpus("fsdd", str(tmp_path / "missing"))


def test_recipe_mirror_links_the_repository(tmp_path):
    s5 = prepare.recipe_mirror(str(tmp_path), "fsdd")
    assert os.path.realpath(os.path.join(s5, "run.sh")) == os.path.realpath(
        os.path.join(prepare.REPO, "egs", "fsdd", "s5", "run.sh"))
    # path.sh finds the repository as ../../.. of the recipe dir
    assert os.path.realpath(os.path.join(s5, "../../..", "kaldi_avg")) == os.path.join(prepare.REPO, "kaldi_avg")


def test_alpha_beta_fit_recovers_the_model():
    alpha, beta = 20e-6, 1e-9
    rows = [{"bytes": m, "pingpong_s": alpha + m * beta} for m in commbench.message_sizes(2**24)]
    fitted = commbench.fit_alpha_beta(rows)
    assert np.allclose(fitted, (alpha, beta), rtol=1e-3)


def test_thread_communicator_measurement():
    rows = commbench.thread_rows(2, [1024, 4096])
    assert [r["bytes"] for r in rows] == [1024, 4096]
    assert all(r["pingpong_s"] > 0 and r["allreduce_s"] > 0 for r in rows)


def test_cli_lists_the_command(capsys):
    assert "experiment" in cli.COMMANDS
    with pytest.raises(SystemExit):
        cli.main(["experiment", "E9", "--out", "x"])
