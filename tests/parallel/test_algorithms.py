"""Oracles of docs/algorithms.md 5 on simulated workers (one process, N replicas, the real update rules)."""
from __future__ import annotations

import pytest
import torch

from kaldi_avg.parallel import (
    ALGORITHMS,
    CostModel,
    LocalCommunicator,
    Replica,
    Simulator,
    StepTime,
    make_algorithm,
    run_ranks,
)
from kaldi_avg.parallel.averaging import average_accepted, frame_weighted_mean, mean, select_best
from kaldi_avg.parallel.ssgd import plan_buckets

from .problems import RegressionLearner, batch, drive, drive_units, make_model, simulate_lockstep, train_single_process


def learners_for(n, **options):
    return [RegressionLearner(w, **options) for w in range(n)]


def rel_close(a, b, rel=1e-6):
    return torch.allclose(a, b, rtol=rel, atol=rel * float(b.abs().max()))


# ---- SSGD -------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 4])
@pytest.mark.parametrize("hooks", [True, False])
@pytest.mark.parametrize("bucket_mb", [1e-5, 4.0])
def test_ssgd_on_n_workers_is_one_process_with_batch_n_b(n, hooks, bucket_mb):
    params = simulate_lockstep("ssgd", n, 8, {"hidden": 3, "hooks": hooks}, bucket_mb=bucket_mb)
    reference = train_single_process(n, 8, hidden=3)
    assert all(rel_close(p, reference) for p in params)


def test_ssgd_frame_normalized_sum_matches_mean_loss_over_unequal_batches():
    sizes = [3, 5, 8]
    learners = [RegressionLearner(w, batch_size=sizes[w], loss="sum", hidden=3) for w in range(3)]
    algorithm = make_algorithm("ssgd", LocalCommunicator(), 3, grad_reduce="frame-normalized")
    drive(algorithm, learners, 6)
    reference = train_single_process(3, 6, batch_size=sizes, hidden=3)
    assert all(rel_close(learner.flat.params, reference) for learner in learners)


def test_ssgd_sum_reduction_is_n_times_the_mean():
    grads = {}
    for reduce in ("mean", "sum"):
        learners = learners_for(4, hidden=3)
        algorithm = make_algorithm("ssgd", LocalCommunicator(), 4, grad_reduce=reduce)
        algorithm.setup([learner.replica for learner in learners])
        algorithm.after_backward([learner.backward() for learner in learners])
        grads[reduce] = learners[2].flat.grads.clone()
    assert rel_close(grads["sum"], 4 * grads["mean"], 1e-12)


def test_buckets_tile_the_buffer_in_backward_order():
    offsets = [(0, 12), (12, 4), (16, 8), (24, 2)]
    buckets = plan_buckets(offsets, bucket_elems=9)
    assert [(s, e, m) for s, e, m in buckets] == [(16, 26, [3, 2]), (0, 16, [1, 0])]
    assert plan_buckets(offsets, bucket_elems=1) == [(24, 26, [3]), (16, 24, [2]), (12, 16, [1]), (0, 12, [0])]


@pytest.mark.parametrize("hooks", [True, False])
def test_ssgd_buckets_start_during_backward_when_parameters_are_known(hooks):
    def play(comm):
        learner = RegressionLearner(comm.rank, hidden=3, hooks=hooks)
        algorithm = make_algorithm("ssgd", comm, 1, bucket_mb=1e-5)
        algorithm.setup([learner.replica])
        learner.backward()
        started_during_backward = algorithm._next
        algorithm.after_backward(8)
        return started_during_backward, len(algorithm.buckets)

    started, buckets = run_ranks(2, play)[0]
    assert started == (buckets if hooks else 0)
    assert buckets == (4 if hooks else 22)   # one per parameter, or one per 1-element chunk


# ---- model averaging and Kaldi's rules ------------------------------------------------------------
def test_ma_with_period_one_step_and_plain_sgd_is_ssgd():
    params = simulate_lockstep("ma", 4, 8, {"hidden": 3}, period_frames=0)
    assert all(rel_close(p, train_single_process(4, 8, hidden=3)) for p in params)


def test_ma_with_momentum_and_period_one_step_is_ssgd_unless_momentum_is_reset():
    """Heavy-ball momentum is linear in the gradients, so with parameters averaged every step the mean
    of the local buffers follows the global buffer's recursion: keep and average both give SSGD."""
    reference = train_single_process(4, 8, hidden=3, momentum=0.9)
    for policy, same in (("average", True), ("keep", True), ("reset", False)):
        params = simulate_lockstep("ma", 4, 8, {"hidden": 3, "momentum": 0.9}, period_frames=0,
                                   local_optimizer_state=policy)
        assert rel_close(params[0], reference) == same, policy


def test_ma_syncs_once_the_period_in_frames_per_worker_has_passed():
    learners = learners_for(3)                      # 8 frames per step
    algorithm = make_algorithm("ma", LocalCommunicator(), 3, period_frames=20)
    algorithm.setup([learner.replica for learner in learners])
    synced = []
    for _step in range(9):
        counts = [learner.backward() for learner in learners]
        for learner in learners:
            learner.update()
        synced.append(algorithm.after_step(counts))
    assert [i for i, s in enumerate(synced) if s] == [2, 5, 8]   # every ceil(20/8) = 3 steps


def test_ma_frame_weighted_average():
    replicas = [Replica(torch.zeros(2, dtype=torch.float64)) for _ in range(2)]
    algorithm = make_algorithm("ma", LocalCommunicator(), 2, period_frames=0, ma_weighting="frames")
    algorithm.setup(replicas)
    replicas[0].params.fill_(4.0)
    before = [r.params.clone() for r in replicas]
    algorithm.after_step([3, 1])
    assert torch.equal(replicas[1].params, torch.full((2,), 3.0, dtype=torch.float64))
    assert torch.equal(replicas[0].params, frame_weighted_mean(before, [3, 1]))


def test_kaldi_iteration_rules_with_idle_workers():
    values = [1.0, 2.0, 7.0, 100.0]
    replicas = [Replica(torch.zeros(3, dtype=torch.float64)) for _ in values]
    algorithm = make_algorithm("ma", LocalCommunicator(), 4, period_frames=None)
    algorithm.setup(replicas)
    objectives = [-1.1, -1.0, -9.0, None]           # worker 3 idle this iteration (num-jobs ramp)
    flats = [torch.full((3,), v, dtype=torch.float64) for v in values]
    for replica, flat in zip(replicas, flats):
        replica.params.copy_(flat)
    mask = algorithm.average_accepted_(objectives)
    assert mask == [True, True, False, False]
    assert all(torch.equal(r.params, average_accepted(flats, objectives)) for r in replicas)
    for replica, flat in zip(replicas, flats):
        replica.params.copy_(flat)
    assert algorithm.select_best_(objectives) == 1
    assert all(torch.equal(r.params, select_best(flats, objectives)) for r in replicas)


# ---- BMUF -----------------------------------------------------------------------------------------
def test_bmuf_without_block_momentum_and_unit_block_lr_is_ma():
    bmuf = simulate_lockstep("bmuf", 4, 9, {"hidden": 3}, period_frames=24, block_momentum=0.0)
    ma = simulate_lockstep("ma", 4, 9, {"hidden": 3}, period_frames=24)
    assert all(rel_close(b, m, 1e-12) for b, m in zip(bmuf, ma))


def test_bmuf_defaults_and_evaluated_model():
    algorithm = make_algorithm("bmuf", LocalCommunicator(), 4, bmuf_nesterov=True)
    described = algorithm.describe()
    assert described["block_momentum"] == 0.75 and described["steady_state_gain"] == 4.0
    learners = learners_for(4)
    drive(algorithm, learners, 12)
    algorithm.finalize()
    assert torch.equal(learners[0].flat.params, algorithm.model)
    assert not torch.equal(algorithm.model, algorithm.start)      # θ, not the Nesterov look-ahead θ_g
    with pytest.raises(ValueError):
        make_algorithm("bmuf", LocalCommunicator(), 2, block_momentum=0.5, bmuf_time_constant_frames=100.0)


def test_bmuf_steady_state_with_a_constant_block_step():
    """Workers whose local phase always moves the model by G: the block step tends to N·ζ·G."""
    n, g = 4, 0.01
    replicas = [Replica(torch.zeros(3, dtype=torch.float64)) for _ in range(n)]
    algorithm = make_algorithm("bmuf", LocalCommunicator(), n, period_frames=0)
    algorithm.setup(replicas)
    starts = []
    for _ in range(300):
        for replica in replicas:
            replica.params.add_(g)
        algorithm.after_step(1)
        starts.append(replicas[0].params.clone())
    assert torch.allclose(starts[-1] - starts[-2], torch.full((3,), n * g, dtype=torch.float64), rtol=1e-9)


# ---- EASGD --------------------------------------------------------------------------------------
def test_easgd_with_zero_moving_rate_is_independent_sgd():
    params = simulate_lockstep("easgd", 3, 10, {"hidden": 3}, period_frames=0, easgd_alpha=0.0)
    for worker, p in enumerate(params):
        alone = RegressionLearner(worker, hidden=3)
        for _ in range(10):
            alone.backward()
            alone.update()
        assert torch.equal(p, alone.flat.params)


def test_synchronous_easgd_with_beta_one_and_tau_one_puts_the_centre_at_the_mean():
    learners = learners_for(4, hidden=3)
    algorithm = make_algorithm("easgd", LocalCommunicator(), 4, period_frames=0, easgd_beta=1.0)
    algorithm.setup([learner.replica for learner in learners])
    for _ in range(5):
        counts = [learner.backward() for learner in learners]
        workers_mean = mean([learner.flat.params for learner in learners])
        algorithm.after_backward(counts)
        assert torch.allclose(algorithm.centre, workers_mean, rtol=0, atol=1e-15)
        for learner in learners:
            learner.update()
        algorithm.after_step(counts)


# ---- ADPSGD and its variants ----------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"adpsgd_lockstep": True}])
def test_adpsgd_with_one_worker_is_sgd(options):
    params = simulate_lockstep("adpsgd", 1, 10, {"hidden": 3}, **options)
    alone = RegressionLearner(0, hidden=3)
    for _ in range(10):
        alone.backward()
        alone.update()
    assert torch.equal(params[0], alone.flat.params)


def distinct_replicas(n, numel=6):
    replicas = [Replica(torch.zeros(numel, dtype=torch.float64)) for _ in range(n)]
    return replicas, [torch.arange(numel, dtype=torch.float64) * (w + 1) + 4 * w for w in range(n)]


@pytest.mark.parametrize("n", [2, 5, 8])
@pytest.mark.parametrize("options", [{"adpsgd_lockstep": True, "pairing": "ring"},
                                     {"adpsgd_lockstep": True, "pairing": "random"}, {"pairing": "random"},
                                     {"pairing": "ring"}])
def test_adpsgd_averaging_preserves_the_sum_and_reaches_consensus(n, options):
    replicas, values = distinct_replicas(n)
    algorithm = make_algorithm("adpsgd", LocalCommunicator(), n, **options)
    algorithm.setup(replicas)
    for replica, value in zip(replicas, values):
        replica.params.copy_(value)
    total = sum(values)
    for _ in range(400):
        for unit in algorithm.units():
            algorithm.after_step([1] * len(unit), unit)
        assert torch.allclose(sum(r.params for r in replicas), total, rtol=1e-12)
    assert algorithm.exchanges > 0
    assert max(float((r.params - total / n).abs().max()) for r in replicas) < 1e-6
    algorithm.finalize()
    assert all(torch.allclose(r.params, total / n, rtol=1e-12) for r in replicas)


def test_delay_by_one_applies_each_gradient_one_step_late():
    params = simulate_lockstep("adpsgd-delay1", 1, 6, {"hidden": 3})
    learner = RegressionLearner(0, hidden=3)
    held = torch.zeros_like(learner.flat.params)
    for _ in range(6):
        learner.backward()
        fresh = learner.flat.grads.clone()
        learner.flat.grads.copy_(held)
        held = fresh
        learner.update()
    assert torch.equal(params[0], learner.flat.params)


def test_delay_by_one_gossip_preserves_the_sum():
    replicas, values = distinct_replicas(6)
    for replica in replicas:
        replica.grads = torch.zeros_like(replica.params)
    algorithm = make_algorithm("adpsgd-delay1", LocalCommunicator(), 6)
    algorithm.setup(replicas)
    for replica, value in zip(replicas, values):
        replica.params.copy_(value)
    for _ in range(50):
        algorithm.after_backward([1] * 6)
        algorithm.after_step([1] * 6)
    assert torch.allclose(sum(r.params for r in replicas), sum(values), rtol=1e-12)
    assert algorithm.exchanges > 0


def test_hadpsgd_with_one_group_is_ssgd_and_keeps_groups_identical():
    learners = learners_for(4, hidden=3)
    algorithm = make_algorithm("hadpsgd", LocalCommunicator(), 4, group_size=4)
    Simulator(algorithm, learners).run(steps=8, finalize=False)
    reference = train_single_process(4, 8, hidden=3)
    assert all(rel_close(learner.flat.params, reference) for learner in learners)

    learners = learners_for(6, hidden=3)
    algorithm = make_algorithm("hadpsgd", LocalCommunicator(), 6, group_size=2)

    def members_agree(_time, unit, _steps):
        assert all(torch.equal(learners[k].flat.params, learners[unit[0]].flat.params) for k in unit)

    Simulator(algorithm, learners, StepTime(1.0, 0.3), seed=3).run(steps=10, observer=members_agree)
    assert algorithm.log.calls["pairwise"] > 0


# ---- ASGD -----------------------------------------------------------------------------------------
def test_asgd_with_one_worker_is_sgd_and_round_robin_staleness_is_n_minus_1():
    params = simulate_lockstep("asgd", 1, 10, {"hidden": 3}, period_frames=0)
    alone = RegressionLearner(0, hidden=3)
    for _ in range(10):
        alone.backward()
        alone.update()
    assert torch.allclose(params[0], alone.flat.params, rtol=0, atol=1e-15)

    algorithm = make_algorithm("asgd", LocalCommunicator(), 4, period_frames=0)
    Simulator(algorithm, learners_for(4), StepTime(1.0, 0.0)).run(steps=10)
    assert dict(algorithm.log.staleness) == {0: 1, 1: 1, 2: 1, 3: 37}


def test_parameter_server_queue_makes_waiting_grow_with_workers():
    waits = []
    for n in (2, 8):
        algorithm = make_algorithm("asgd", LocalCommunicator(), n, period_frames=0)
        simulator = Simulator(algorithm, learners_for(n), StepTime(1.0, 0.0), CostModel(0.0, 0.0, 0.5 / 48))
        waits.append(simulator.run(steps=5).server_wait_s / n)
    assert waits[0] < waits[1]


# ---- post-local SGD ---------------------------------------------------------------------------------
def test_post_local_sgd_is_ssgd_during_warmup_then_local_sgd():
    learners = learners_for(4, hidden=3)
    algorithm = make_algorithm("post-local-sgd", LocalCommunicator(), 4, warmup_frames=24, period_frames=32)
    drive(algorithm, learners, 3)
    assert algorithm.local_phase
    reference = train_single_process(4, 3, hidden=3)
    assert all(rel_close(learner.flat.params, reference) for learner in learners)
    drive_units(algorithm, learners, 1)
    assert not torch.equal(learners[0].flat.params, learners[1].flat.params)   # local steps
    drive_units(algorithm, learners, 3)
    assert all(torch.equal(learner.flat.params, learners[0].flat.params) for learner in learners)  # averaged


# ---- every algorithm: resume at an iteration boundary, simulator ---------------------------------------
RESUMABLE = {
    "ma": {"period_frames": 16}, "bmuf": {"period_frames": 16, "bmuf_nesterov": True},
    "easgd": {"period_frames": 16}, "asgd": {"period_frames": 16, "asgd_momentum": 0.5},
    "ssgd": {"ssgd_resync_steps": 3}, "adpsgd": {}, "hadpsgd": {"group_size": 2},
    "adpsgd-delay1": {}, "post-local-sgd": {"warmup_frames": 16, "period_frames": 16},
}


def test_every_algorithm_is_covered():
    assert set(RESUMABLE) == set(ALGORITHMS)


class CyclingBatchLearner(RegressionLearner):
    """Batches of 4, 8, 12, 4, ... frames: a period clock's agreed steps per period then depends on
    which steps it has seen."""

    def backward(self) -> int:
        self.batch_size = 4 * (1 + self.step % 3)
        return super().backward()


def variant(name, options, test_id, learner=RegressionLearner, steps=3, marks=()):
    """A resume scenario: `steps` steps per iteration of `learner`s (4 workers)."""
    return pytest.param(name, options, learner, steps, id=test_id, marks=marks)


# Variants whose state across the iteration boundary the defaults above leave untested (3 steps of
# 8 frames per iteration): ASGD's staleness-aware step reads the server's version counters; with a
# period of 2 steps (16 frames) a period clock ends the iteration one step into a period, with 3 steps
# (24) an asynchronous EASGD exchange is left due; the fixed ring alternates lock-step matchings by
# round number; with cycling batch sizes a period clock's agreed rate matters too (MA and BMUF with
# a period of 20 frames and 5 steps per iteration: the rate carried over, 36 frames in 5 steps, gives
# 3 steps per period, the one a fresh clock agrees from iteration 1's first step alone, 12 frames,
# gives 2); and a resync every 2 steps of 3 puts SSGD's resyncs at other steps unless its step
# count is carried.
RESUMABLE_VARIANTS = [
    variant("asgd", {"period_frames": 16, "asgd_staleness_aware": True}, "asgd-staleness-aware"),
    variant("asgd", {"period_frames": 0, "asgd_staleness_aware": True}, "asgd-per-step-staleness-aware"),
    variant("adpsgd-delay1", {"pairing": "ring"}, "adpsgd-delay1-ring"),
    variant("adpsgd-delay1", {"pairing": "ring", "period_frames": 16}, "adpsgd-delay1-ring-period"),
    variant("adpsgd-delay1", {"pairing": "ring", "period_frames": 20}, "adpsgd-delay1-ring-period-cycling-batches",
            CyclingBatchLearner),
    variant("easgd", {"period_frames": 16}, "easgd-period-cycling-batches", CyclingBatchLearner),
    variant("easgd", {"easgd_async": True, "period_frames": 16}, "easgd-async-period"),
    variant("easgd", {"easgd_async": True, "period_frames": 24}, "easgd-async-period-due"),
    variant("adpsgd", {"period_frames": 16}, "adpsgd-period"),
    variant("adpsgd", {"adpsgd_lockstep": True}, "adpsgd-lockstep"),
    variant("adpsgd", {"adpsgd_lockstep": True, "pairing": "ring"}, "adpsgd-lockstep-ring"),
    variant("adpsgd", {"adpsgd_lockstep": True, "pairing": "ring", "period_frames": 16}, "adpsgd-lockstep-ring-period"),
    variant("adpsgd", {"adpsgd_lockstep": True, "pairing": "ring", "period_frames": 20},
            "adpsgd-lockstep-ring-period-cycling-batches", CyclingBatchLearner),
    variant("hadpsgd", {"group_size": 2, "period_frames": 16}, "hadpsgd-period"),
    variant("ma", {"period_frames": 20}, "ma-period-cycling-batches", CyclingBatchLearner, steps=5),
    variant("bmuf", {"period_frames": 20}, "bmuf-period-cycling-batches", CyclingBatchLearner, steps=5),
    variant("ssgd", {"ssgd_resync_steps": 2}, "ssgd-resync-2-of-3-steps"),
    variant("post-local-sgd", {"warmup_frames": 16, "period_frames": 20}, "post-local-sgd-period-cycling-batches",
            CyclingBatchLearner, steps=5),
]


def record_reports(algorithm):
    """The list that every later `after_step()` of `algorithm` appends its report to (whether that
    step synchronized)."""
    reports = []
    after_step = algorithm.after_step

    def recorded(frames, replicas=None):
        reports.append(after_step(frames, replicas))
        return reports[-1]

    algorithm.after_step = recorded
    return reports


def resume_scenario(comm, n_local, name, options, learner, steps, path):
    """One rank's side of the training driver's resume: iterations 0 and 1 uninterrupted, and
    iteration 1 again by a new algorithm from `carry_state()` after iteration 0's `finalize()` (saved
    as plain values, N.algo.pt, and loaded with weights_only), on learners with the same parameters.
    Returns, for iteration 1 of both runs: every replica's parameters, the communication log and the
    `after_step()` reports; and the state."""
    def iteration(algorithm, learners, index):
        reports = record_reports(algorithm)
        algorithm.begin_iteration(index, 7 + index)
        drive(algorithm, learners, steps)
        algorithm.finalize()
        del algorithm.after_step          # the class's again
        return reports

    workers = range(comm.rank * n_local, (comm.rank + 1) * n_local)
    learners = [learner(w, hidden=3) for w in workers]
    algorithm = make_algorithm(name, comm, n_local, **options)
    iteration(algorithm, learners, 0)
    torch.save([algorithm.carry_state()], path)
    carried = torch.load(path, weights_only=True)[0]
    resumed = [learner(w, hidden=3) for w in workers]
    for one, before in zip(resumed, learners):
        one.flat.params.copy_(before.flat.params)
        one.step = before.step
    reports = iteration(algorithm, learners, 1)

    again = make_algorithm(name, comm, n_local, **options)
    again.load_carry_state(carried)
    reports_again = iteration(again, resumed, 1)
    return ([one.flat.params.clone() for one in learners], algorithm.log.summary(), reports,
            [one.flat.params.clone() for one in resumed], again.log.summary(), reports_again, carried)


@pytest.mark.parametrize(("name", "options", "learner", "steps"),
                         [variant(name, RESUMABLE[name], name) for name in sorted(RESUMABLE)] + RESUMABLE_VARIANTS)
def test_resume_from_carry_state_continues_identically(name, options, learner, steps, tmp_path):
    """Simulated workers (one rank, 4 replicas): the same models, communication and reports."""
    params, log, reports, params_again, log_again, reports_again, carried = resume_scenario(
        LocalCommunicator(), 4, name, options, learner, steps, tmp_path / "1.algo.pt")
    assert all(torch.equal(a, b) for a, b in zip(params, params_again))
    assert log_again == log
    assert reports_again == reports
    with pytest.raises(ValueError):
        make_algorithm(name, LocalCommunicator(), 2, **options).load_carry_state(carried)


# Synchronous algorithms on 2 ranks of 2 workers: the broadcasts of SSGD's resyncs (and of every
# setup()) are logged only across ranks.
@pytest.mark.parametrize(("name", "options", "learner", "steps"), [
    variant("ssgd", {"ssgd_resync_steps": 2}, "ssgd-resync-2-of-3-steps"),
    variant("ssgd", {"ssgd_resync_steps": 3}, "ssgd-resync-3-of-3-steps"),
    variant("ma", {"period_frames": 20}, "ma-period-cycling-batches", CyclingBatchLearner, steps=5),
    variant("bmuf", {"period_frames": 20, "bmuf_nesterov": True}, "bmuf-nesterov-period-cycling-batches",
            CyclingBatchLearner, steps=5),
    variant("easgd", {"period_frames": 16}, "easgd-period"),
])
def test_resume_on_ranks_continues_identically(name, options, learner, steps, tmp_path):
    results = run_ranks(2, lambda comm: resume_scenario(comm, 2, name, options, learner, steps,
                                                        tmp_path / f"1.algo.{comm.rank}.pt"))
    for params, log, reports, params_again, log_again, reports_again, _ in results:
        assert all(torch.equal(a, b) for a, b in zip(params, params_again))
        assert log_again == log
        assert reports_again == reports


def test_synchronous_easgd_reports_the_elastic_steps_of_its_steps():
    """after_step() says whether the step took an elastic step; finalize()'s last one is no step's."""
    learners = learners_for(4, hidden=3)
    algorithm = make_algorithm("easgd", LocalCommunicator(), 4, period_frames=16)
    reports = record_reports(algorithm)
    for index in range(2):
        algorithm.begin_iteration(index, 7 + index)
        drive(algorithm, learners, 3)    # elastic steps at the third step, then in finalize()
        algorithm.finalize()
    assert reports == [False, False, True] * 2


def test_simulator_is_deterministic_and_models_stragglers():
    def run(name, slowdown, **options):
        algorithm = make_algorithm(name, LocalCommunicator(), 4, **options)
        learners = learners_for(4)
        report = Simulator(algorithm, learners, StepTime(1.0, 0.2, slowdown), seed=11).run(until_s=40.0)
        return report, learners[0].flat.params.clone()

    first, params = run("adpsgd", {})
    second, again = run("adpsgd", {})
    assert first.wall_time_s == second.wall_time_s and torch.equal(params, again)
    slow_sync, _ = run("ma", {3: 4.0}, period_frames=0)
    slow_async, _ = run("adpsgd", {3: 4.0})
    assert max(slow_sync.steps) < 12                                  # everyone waits for worker 3
    assert min(slow_async.steps[:3]) > 3 * slow_async.steps[3]        # the others keep going
    assert slow_async.comm["calls"]["pairwise"] > 0


def test_simulator_charges_modelled_communication():
    algorithm = make_algorithm("ssgd", LocalCommunicator(), 4)
    report = Simulator(algorithm, learners_for(4), StepTime(1.0, 0.0), CostModel(1e-3, 1e-6)).run(steps=5)
    model_bytes = make_model().weight.numel() * 8 + 8
    per_step = 2 * 3 * 1e-3 + 2 * 3 / 4 * model_bytes * 1e-6
    assert report.comm_seconds == pytest.approx(5 * per_step)
    assert report.wall_time_s == pytest.approx(5 * (1.0 + per_step))


def test_batches_are_independent_of_call_order():
    assert torch.equal(batch(1, 3, 4)[0], batch(1, 3, 4)[0])
    assert not torch.equal(batch(1, 3, 4)[0], batch(2, 3, 4)[0])
