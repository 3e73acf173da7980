"""The communicator contract, on the size-1 and in-process backends; flat buffers; the watchdog."""
from __future__ import annotations

import sys
import threading
import time

import pytest
import torch

from kaldi_avg.parallel import (
    FlatParams,
    InProcessGroup,
    LocalCommunicator,
    Watchdog,
    common_step_count,
    failure_guard,
    make_communicator,
    run_ranks,
)
from kaldi_avg.parallel.comm import CommAborted, CommTimeout
from kaldi_avg.parallel.flat import parameter_offsets

from .problems import optimizer_state_tensors


def test_importing_the_package_does_not_import_mpi4py():
    assert "kaldi_avg.parallel.mpi_backend" not in sys.modules or "mpi4py" in sys.modules


def test_local_communicator_is_an_identity():
    comm = make_communicator("local")
    t = torch.arange(4.0)
    assert comm.allreduce_sum_(t) is t and torch.equal(t, torch.arange(4.0))
    assert comm.iallreduce_sum_(t).wait() is None
    assert comm.broadcast_(t, 0) is t
    assert comm.allgather_object({"a": 1}) == [{"a": 1}]
    assert comm.split(None) is None and comm.split(3).size == 1
    comm.barrier()
    with pytest.raises(ValueError):
        comm.send(t, 0)
    with pytest.raises(ValueError):
        make_communicator("carrier-pigeon")


def test_in_process_collectives():
    def play(comm):
        t = torch.full((3,), float(comm.rank + 1))
        comm.allreduce_sum_(t)
        b = torch.full((2,), float(comm.rank))
        comm.broadcast_(b, root=2)
        request = comm.iallreduce_sum_(u := torch.ones(2))
        request.wait()
        comm.barrier()
        return t.tolist(), b.tolist(), u.tolist(), comm.allgather_object(comm.rank * 10)

    for t, b, u, gathered in run_ranks(4, play):
        assert t == [10.0] * 3 and b == [2.0, 2.0] and u == [4.0, 4.0] and gathered == [0, 10, 20, 30]


def test_in_process_point_to_point():
    def play(comm):
        peer = comm.rank ^ 1
        got = torch.zeros(2)
        comm.exchange(peer, torch.full((2,), float(comm.rank)), got)
        senders = []
        if comm.rank == 0:
            buf = torch.zeros(1)
            for _ in range(comm.size - 1):
                senders.append(comm.recv(buf, None, tag=5))
        else:
            comm.send(torch.ones(1), 0, tag=5)
        request = comm.irecv(r := torch.zeros(1), (comm.rank - 1) % comm.size, tag=9)
        comm.isend(torch.full((1,), float(comm.rank)), (comm.rank + 1) % comm.size, tag=9).wait()
        request.wait()
        return got.tolist(), sorted(senders), float(r)

    results = run_ranks(4, play)
    assert [res[0] for res in results] == [[1.0, 1.0], [0.0, 0.0], [3.0, 3.0], [2.0, 2.0]]
    assert results[0][1] == [1, 2, 3]
    assert [res[2] for res in results] == [3.0, 0.0, 1.0, 2.0]


def test_split_and_dup_make_independent_channels():
    def play(comm):
        half = comm.split(comm.rank % 2, key=-comm.rank)
        t = torch.full((1,), float(comm.rank))
        half.allreduce_sum_(t)
        dup = comm.dup()
        if comm.rank == 0:
            on_dup = dup.isend(torch.full((1,), 7.0), 1)
            comm.send(torch.full((1,), 8.0), 1)
            on_dup.wait()
            return half.rank, half.size, float(t), None
        if comm.rank == 1:
            first, second = torch.zeros(1), torch.zeros(1)
            comm.recv(first, 0)        # matches the message sent on comm, not the one on dup
            dup.recv(second, 0)
            return half.rank, half.size, float(t), (float(first), float(second))
        return half.rank, half.size, float(t), None

    results = run_ranks(4, play)
    assert [r[:3] for r in results] == [(1, 2, 2.0), (1, 2, 4.0), (0, 2, 2.0), (0, 2, 4.0)]
    assert results[1][3] == (8.0, 7.0)
    assert run_ranks(3, lambda comm: comm.split(None if comm.rank else 0))[1:] == [None, None]


def test_timeouts_name_the_rank_and_aborts_reach_everyone():
    with pytest.raises(RuntimeError) as failure:
        run_ranks(2, lambda comm: comm.recv(torch.zeros(1), 1 - comm.rank), timeout_s=0.3)
    assert isinstance(failure.value.__cause__, CommTimeout) and "receive from rank" in str(failure.value)

    def play(comm):
        if comm.rank == 1:
            comm.abort("rank 1 gives up")
        comm.barrier()

    with pytest.raises(RuntimeError) as failure:
        run_ranks(3, play, timeout_s=5)
    assert isinstance(failure.value.__cause__, CommAborted) and "rank 1 gives up" in str(failure.value)


def test_communication_time_is_accumulated():
    rank_1_is_waiting = threading.Event()

    def play(comm):
        if comm.rank == 0:
            rank_1_is_waiting.wait(10)
            time.sleep(0.2)
        else:
            rank_1_is_waiting.set()
        comm.allreduce_sum_(torch.ones(10))
        assert comm.oldest_in_flight() is None
        return comm.stats.as_dict()["allreduce"], comm.stats.seconds

    stats = run_ranks(2, play)
    assert stats[1][0]["calls"] == 1 and stats[1][0]["bytes"] == 40
    assert stats[1][1] >= 0.05   # rank 1 waited inside the allreduce while rank 0 slept


def test_common_step_count_is_the_minimum_over_ranks():
    assert run_ranks(3, lambda comm: common_step_count(comm, 10 + comm.rank)) == [10, 10, 10]


def wait_for_abort(comm, seconds=10.0):
    deadline = time.monotonic() + seconds
    while comm._hub.aborted is None and time.monotonic() < deadline:
        time.sleep(0.01)


def test_watchdog_names_a_silent_rank_and_lets_a_clean_stop_pass():
    def clean(comm):
        with Watchdog(comm, interval_s=0.05, timeout_s=3.0) as watchdog:
            time.sleep(0.3)
        return watchdog.failure

    assert run_ranks(3, clean) == [None, None, None]

    def one_dies(comm):
        watchdog = Watchdog(comm, interval_s=0.05, timeout_s=0.5).start()
        if comm.rank == 1:
            watchdog._channel.post = lambda *args: None   # rank 1 goes silent
            wait_for_abort(comm)
            return watchdog.failure
        try:
            comm.recv(torch.zeros(1), 1)                  # blocked on the silent rank
        except CommAborted as aborted:
            return str(aborted)

    results = InProcessGroup(3, timeout_s=20).run(one_dies, join_timeout_s=30)
    assert "rank 1 sent no heartbeat" in results[2]
    assert "rank 1 sent no heartbeat" in results[0]


def test_watchdog_op_timeout_names_the_stuck_operation(tmp_path):
    def play(comm):
        watchdog = Watchdog(comm, interval_s=0.05, timeout_s=20.0, op_timeout_s=0.3,
                            report_path=str(tmp_path / f"rank.{comm.rank}.failed")).start()
        if comm.rank == 0:
            try:
                comm.allreduce_sum_(torch.ones(1))     # rank 1 never joins
            except CommAborted as aborted:
                return str(aborted)
        wait_for_abort(comm)
        return watchdog.failure

    results = InProcessGroup(2, timeout_s=20).run(play, join_timeout_s=30)
    assert "allreduce has waited" in results[0]
    assert "allreduce has waited" in (tmp_path / "rank.0.failed").read_text()   # the verdict survives the abort


@pytest.mark.parametrize("where", ["main", "thread"])
def test_failure_guard_turns_an_exception_into_an_abort_naming_the_rank(where, tmp_path):
    def play(comm):
        try:
            with failure_guard(comm, str(tmp_path / f"rank.{comm.rank}.failed")):
                if comm.rank == 1:
                    if where == "main":
                        raise RuntimeError("bad minibatch")
                    worker = threading.Thread(target=lambda: 1 / 0, name="prefetch")
                    worker.start()
                    worker.join()
                comm.recv(torch.zeros(1), 1 - comm.rank)
        except CommAborted as aborted:
            return str(aborted)

    messages = InProcessGroup(2, timeout_s=10).run(play, join_timeout_s=20)
    expected = ("rank 1/2 failed (main): RuntimeError: bad minibatch" if where == "main"
                else "rank 1/2 failed (thread prefetch): ZeroDivisionError")
    assert all(message.startswith(expected) for message in messages), messages
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank.1.failed"]  # the report survives the abort
    assert expected in (tmp_path / "rank.1.failed").read_text()


def test_flat_params_are_views_and_gradients_land_in_the_flat_buffer():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    flat = FlatParams(model.parameters())
    assert flat.params.numel() == 3 * 4 + 4 + 4 * 2 + 2
    assert parameter_offsets(flat.params, flat.parameters) == [(0, 12), (12, 4), (16, 8), (24, 2)]
    model(torch.randn(5, 3)).sum().backward()
    assert flat.grads.abs().sum() > 0
    optimizer.step()
    flat.params.zero_()
    assert all(float(p.detach().abs().sum()) == 0 for p in model.parameters())
    assert len(optimizer_state_tensors(optimizer)) == 4
    with pytest.raises(ValueError):
        parameter_offsets(flat.params, flat.parameters[::-1])


def test_local_communicator_has_no_heartbeat_peers():
    assert LocalCommunicator().heartbeats().drain(0) == []
    assert Watchdog(LocalCommunicator()).start().failure is None
