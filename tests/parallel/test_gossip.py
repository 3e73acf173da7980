"""Pairing oracles and the deadlock-freedom of the asynchronous gossip protocol (spec §2.7, §5.5)."""
from __future__ import annotations

import random
import threading
import time

import pytest
import torch

from kaldi_avg.parallel import InProcessGroup
from kaldi_avg.parallel.comm import CommTimeout
from kaldi_avg.parallel.gossip import (
    GossipThread,
    PartnerChooser,
    gossip_partners,
    is_active,
    ring_neighbours,
    round_matching,
)


def assert_matching(partner):
    for worker, other in enumerate(partner):
        if other is not None:
            assert other != worker and partner[other] == worker


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("pairing", ["ring", "random"])
def test_every_lockstep_round_is_a_matching(n, pairing):
    for round_index in range(6):
        partner = round_matching(n, round_index, pairing, seed=3)
        assert_matching(partner)
        assert sum(p is None for p in partner) == n % 2


def test_fixed_ring_alternates_the_two_odd_even_matchings():
    assert round_matching(6, 0, "ring", 0) == [1, 0, 3, 2, 5, 4]
    assert round_matching(6, 1, "ring", 0) == [5, 2, 1, 4, 3, 0]
    assert round_matching(6, 2, "ring", 0) == round_matching(6, 0, "ring", 0)


def test_randomized_ring_is_shared_by_seed_and_changes_between_rounds():
    rounds = [round_matching(8, r, "random", seed=7) for r in range(5)]
    assert rounds == [round_matching(8, r, "random", seed=7) for r in range(5)]
    assert len({tuple(r) for r in rounds}) > 1


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 9])
def test_active_and_passive_neighbours_are_symmetric_and_bipartite(n):
    for worker in range(n):
        for partner in gossip_partners(worker, n):
            assert is_active(partner) != is_active(worker)
            assert worker in gossip_partners(partner, n)
            assert partner in ring_neighbours(worker, n)


def test_partner_chooser_alternates_or_draws():
    ring = PartnerChooser(2, 6, "ring", seed=0)
    assert [ring.next() for _ in range(4)] == [1, 3, 1, 3]
    assert PartnerChooser(1, 6, "ring", seed=0).next() is None   # passive workers never initiate
    draws = [PartnerChooser(0, 6, "random", seed=5) for _ in range(2)]
    assert [draws[0].next() for _ in range(10)] == [draws[1].next() for _ in range(10)]   # seeded


def test_bipartite_gossip_never_deadlocks_over_10000_random_delay_exchanges():
    """The real communication threads, 6 ranks, synchronous sends, random delays on both sides."""
    n, target = 6, 10_000
    exchanges = [0]
    counter_lock = threading.Lock()

    def play(comm):
        delays = random.Random(comm.rank)
        x = torch.full((8,), float(3 * comm.rank + 1), dtype=torch.float64)
        lock = threading.Lock()

        def snapshot():
            time.sleep(delays.random() * 1e-4)
            with lock:
                return x.clone()

        def on_delta(delta):
            with lock:
                x.add_(delta)

        def on_exchange(_):
            with counter_lock:
                exchanges[0] += 1

        thread = GossipThread(comm.dup(), PartnerChooser(comm.rank, n, "random", seed=1), snapshot, on_delta,
                              on_exchange)
        thread.start()
        if thread.active:
            pace = random.Random(100 + comm.rank)
            while exchanges[0] < 2 * target:   # each exchange is counted by both partners
                thread.request()
                time.sleep(pace.random() * 1e-4)
        thread.stop()
        return x

    models = InProcessGroup(n, timeout_s=30).run(play, join_timeout_s=120)
    assert exchanges[0] >= 2 * target
    total = sum(float(3 * r + 1) for r in range(n)) * 8
    assert abs(float(sum(m.sum() for m in models)) - total) < 1e-9 * total
    spread = max(float(m.max()) for m in models) - min(float(m.min()) for m in models)
    assert spread < 1e-6   # thousands of averagings mixed the models to consensus


def test_naive_symmetric_pairing_deadlocks_under_the_same_rules():
    """Negative control: every rank initiates a blocking exchange with a random neighbour."""

    def play(comm):
        rng = random.Random(comm.rank)
        buf, got = torch.zeros(2), torch.zeros(2)
        for _ in range(200):
            partner = rng.choice(ring_neighbours(comm.rank, comm.size))
            comm.send(buf, partner, 0)
            comm.recv(got, partner, 0)

    with pytest.raises(RuntimeError) as failure:
        InProcessGroup(4, timeout_s=1.0).run(play, join_timeout_s=30)
    assert isinstance(failure.value.__cause__, CommTimeout)
