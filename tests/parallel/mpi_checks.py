"""Oracle checks on real ranks: run as `mpiexec -n 2 python tests/parallel/mpi_checks.py mpi|torch`.

Every rank runs every check; rank 0 prints "ok <check>" for each. Each real run is compared with the
same algorithm simulated in this process (N logical workers), which must give the same numbers.
"""
from __future__ import annotations

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from kaldi_avg.parallel import Replica, Watchdog, failure_guard, make_algorithm, make_communicator
from kaldi_avg.parallel.averaging import average_accepted, select_best
from tests.parallel.problems import RegressionLearner, drive, simulate_lockstep, train_single_process

STEPS = 12


def close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-6) -> bool:
    return bool(torch.allclose(a, b, rtol=rel, atol=rel * float(b.abs().max())))


def real_run(comm, name: str, steps: int = STEPS, finalize: bool = True, **options) -> torch.Tensor:
    learner = RegressionLearner(comm.rank, hidden=3)
    algorithm = make_algorithm(name, comm, 1, **options)
    drive(algorithm, [learner], steps)
    if finalize:
        algorithm.finalize()
    return learner.flat.params.clone()


def same_as_simulation(comm, name: str, **options) -> None:
    mine = real_run(comm, name, **options)
    simulated = simulate_lockstep(name, comm.size, STEPS, {"hidden": 3}, finalize=True, **options)
    assert torch.equal(mine, simulated[comm.rank]), f"{name}: real run differs from the simulation"


def check_rank_average(comm) -> None:
    t = torch.full((1000,), float(comm.rank), dtype=torch.float64)
    algorithm = make_algorithm("ma", comm, 1, period_frames=None)
    algorithm.setup([Replica(t)])          # setup makes everyone worker 0's: put r back afterwards
    t.fill_(float(comm.rank))
    algorithm.sync()
    assert torch.all(t == (comm.size - 1) / 2), "the average of ranks' values is not exact"


def check_ssgd_is_big_batch(comm) -> None:
    mine = real_run(comm, "ssgd", bucket_mb=1e-5)   # tiny buckets: several overlapped allreduces
    reference = train_single_process(comm.size, STEPS, hidden=3)
    assert close(mine, reference), "SSGD on N ranks differs from one process with batch N·b"
    same_as_simulation(comm, "ssgd", bucket_mb=1e-5)


def check_ma_period_one_is_ssgd(comm) -> None:
    ma = real_run(comm, "ma", period_frames=0)
    assert close(ma, train_single_process(comm.size, STEPS, hidden=3)), "MA(H=1, SGD) differs from SSGD"


def check_synchronous_algorithms(comm) -> None:
    for name, options in [("ma", {"period_frames": 24, "ma_weighting": "frames"}),
                          ("bmuf", {"period_frames": 24}),
                          ("bmuf", {"period_frames": 24, "bmuf_nesterov": True}),
                          ("easgd", {"period_frames": 16}),
                          ("adpsgd", {"adpsgd_lockstep": True, "pairing": "ring"}),
                          ("adpsgd-delay1", {}),
                          ("post-local-sgd", {"warmup_frames": 40, "period_frames": 16})]:
        same_as_simulation(comm, name, **options)


def check_kaldi_iteration_rules(comm) -> None:
    learner = RegressionLearner(comm.rank, hidden=3)
    algorithm = make_algorithm("ma", comm, 1, period_frames=None)
    algorithm.setup([learner.replica])
    learner.flat.params.add_(float(comm.rank + 1))
    everyone = comm.allgather_object(learner.flat.params.clone())
    objectives = [-1.5 * r for r in range(comm.size)]   # rank 1 is rejected (threshold 1.0)
    algorithm.average_accepted_([objectives[comm.rank]])
    assert torch.equal(learner.flat.params, average_accepted(everyone, objectives)), "average_accepted_"
    learner.flat.params.copy_(everyone[comm.rank])
    algorithm.select_best_([objectives[comm.rank]])
    assert torch.equal(learner.flat.params, select_best(everyone, objectives)), "select_best_"


def check_asynchronous_algorithms(comm) -> None:
    for name, options in [("adpsgd", {}), ("asgd", {"period_frames": 16}),
                          ("easgd", {"easgd_async": True, "period_frames": 16}), ("hadpsgd", {"group_size": 1})]:
        mine = real_run(comm, name, steps=40, **options)
        everyone = comm.allgather_object(mine)
        assert all(torch.equal(mine, other) for other in everyone), f"{name}: replicas differ after finalize"
        assert torch.isfinite(mine).all(), f"{name}: diverged"
    # one group of all ranks is plain SSGD
    grouped = real_run(comm, "hadpsgd", group_size=comm.size)
    assert close(grouped, train_single_process(comm.size, STEPS, hidden=3)), "H-ADPSGD with one group != SSGD"


def check_gossip_preserves_sum(comm) -> None:
    """Pure gossip (no gradient): Σ xⁱ never changes and the models contract to their mean."""
    x = torch.full((64,), float(4 * comm.rank + 1), dtype=torch.float64)
    algorithm = make_algorithm("adpsgd", comm, 1)
    algorithm.setup([Replica(x)])
    x.fill_(float(4 * comm.rank + 1))
    total = sum(4 * r + 1 for r in range(comm.size)) * 64.0
    for _ in range(200):
        algorithm.after_step(1)
        time.sleep(0.0005)
    algorithm.stop_gossip()
    assert sum(comm.allgather_object(algorithm.exchanges)) > 0, "no exchange happened"
    sums = comm.allgather_object(float(x.sum()))
    assert abs(sum(sums) - total) <= 1e-9 * total, f"gossip changed the sum: {sum(sums)} != {total}"


CHECKS = [check_rank_average, check_ssgd_is_big_batch, check_ma_period_one_is_ssgd, check_synchronous_algorithms,
          check_kaldi_iteration_rules, check_asynchronous_algorithms, check_gossip_preserves_sum]


def main() -> None:
    torch.set_num_threads(1)
    comm = make_communicator(sys.argv[1] if len(sys.argv) > 1 else "mpi")
    with failure_guard(comm), Watchdog(comm, interval_s=0.2, timeout_s=20.0):
        for check in CHECKS:
            check(comm)
            comm.barrier()
            if comm.rank == 0:
                print(f"ok {check.__name__}", flush=True)
    if comm.rank == 0:
        print(f"communication seconds on rank 0: {comm.stats.seconds:.3f}", flush=True)


if __name__ == "__main__":
    main()
