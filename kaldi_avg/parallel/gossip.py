"""Who averages with whom in ADPSGD, and the communication thread that does it without deadlock.

Two pairing regimes (Lian et al. 2018; Cui et al. 2021):

* Lock-step rounds use a perfect matching per round, so a blocking exchange between partners cannot
  deadlock. "ring" alternates the matchings {(2m, 2m+1)} and {(2m+1, 2m+2 mod N)} (the fixed ring);
  "random" pairs neighbours of a ring laid over a permutation that every rank draws from the same
  seed each round (the randomized ring), so no negotiation is needed.
* Asynchronous gossip uses the bipartite active/passive split: even workers initiate, odd workers
  only serve, answering requests in arrival order. Passive workers never wait on anyone, so no cycle
  of waits (and no deadlock) can form. An active worker picks among its passive ring neighbours,
  alternating ("ring") or uniformly at random ("random").
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from .averaging import pairwise_delta
from .comm import Communicator

PAIRINGS = ("ring", "random")

_TAG_HEADER, _TAG_MODEL, _TAG_REPLY = 11, 12, 13
_REQUEST, _STOP = 1, 2


def round_matching(n: int, round_index: int, pairing: str, seed: int) -> list[int | None]:
    """partner[w] for every worker in lock-step round `round_index` (None: sits this round out)."""
    if pairing == "ring":
        order = list(range(n))
        offset = round_index % 2
    elif pairing == "random":
        order = list(np.random.default_rng([seed, round_index]).permutation(n))
        offset = 0
    else:
        raise ValueError(f"unknown pairing {pairing!r}; choose from {PAIRINGS}")
    partner: list[int | None] = [None] * n
    for i in range(offset, n - 1 if offset == 0 else n, 2):
        a, b = order[i], order[(i + 1) % n]
        if a != b and partner[a] is None and partner[b] is None:
            partner[a], partner[b] = b, a
    return partner


def is_active(worker: int) -> bool:
    return worker % 2 == 0


def ring_neighbours(worker: int, n: int) -> list[int]:
    return sorted({(worker - 1) % n, (worker + 1) % n} - {worker})


def gossip_partners(worker: int, n: int) -> list[int]:
    """The ring neighbours on the other side of the active/passive split."""
    return [w for w in ring_neighbours(worker, n) if is_active(w) != is_active(worker)]


class PartnerChooser:
    """The passive neighbour an active worker asks next (the algorithms make one at each `setup`)."""

    def __init__(self, worker: int, n: int, pairing: str, seed: int) -> None:
        if pairing not in PAIRINGS:
            raise ValueError(f"unknown pairing {pairing!r}; choose from {PAIRINGS}")
        self.partners = gossip_partners(worker, n) if is_active(worker) else []
        self.pairing = pairing
        self.count = 0
        self.rng = np.random.default_rng([seed, worker])

    def next(self) -> int | None:
        if not self.partners:
            return None
        if self.pairing == "ring":
            choice = self.partners[self.count % len(self.partners)]
        else:
            choice = self.partners[int(self.rng.integers(len(self.partners)))]
        self.count += 1
        return choice


class GossipThread:
    """The communication thread of one gossip participant (rank `comm.rank` of `comm`).

    An active participant performs one exchange after each `request()` (requests made while one is
    in flight merge into the next, so a slow network lowers the mixing rate instead of queueing).
    A passive one serves until every active neighbour has said goodbye. After each exchange
    `on_delta(d)` receives this side's pairwise delta; `snapshot()` must return a copy of the model
    taken under the caller's lock.
    """

    def __init__(self, comm: Communicator, chooser: PartnerChooser,
                 snapshot: Callable[[], torch.Tensor], on_delta: Callable[[torch.Tensor], None],
                 on_exchange: Callable[[int], None]) -> None:
        self.comm = comm
        self.chooser = chooser
        self.snapshot = snapshot
        self.on_delta = on_delta
        self.on_exchange = on_exchange
        self.active = is_active(comm.rank)
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._header = torch.zeros(2, dtype=torch.int64)
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"kaldi-avg-gossip-{comm.rank}")

    def start(self) -> None:
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        """Finish (an active worker completes a pending exchange first) and join the thread."""
        self._stopping.set()
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        if self.active:
            self._run_active()
        else:
            self._run_passive()

    def _run_active(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping.is_set():
                break
            partner = self.chooser.next()
            if partner is not None:
                self._exchange_with(partner)
        for partner in self.chooser.partners:
            self.comm.send(torch.tensor([_STOP, self.comm.rank]), partner, _TAG_HEADER)

    def _exchange_with(self, partner: int) -> None:
        sent = self.snapshot()
        received = torch.empty_like(sent)
        self.comm.send(torch.tensor([_REQUEST, self.comm.rank]), partner, _TAG_HEADER)
        self.comm.send(sent, partner, _TAG_MODEL)
        self.comm.recv(received, partner, _TAG_REPLY)
        self.on_delta(pairwise_delta(sent, received))
        self.on_exchange(partner)

    def _run_passive(self) -> None:
        waiting_for = set(gossip_partners(self.comm.rank, self.comm.size))
        received: torch.Tensor | None = None
        while waiting_for:
            source = self.comm.recv(self._header, None, _TAG_HEADER)
            if int(self._header[0]) == _STOP:
                waiting_for.discard(source)
                continue
            sent = self.snapshot()
            if received is None:
                received = torch.empty_like(sent)
            self.comm.recv(received, source, _TAG_MODEL)
            self.comm.send(sent, source, _TAG_REPLY)
            self.on_delta(pairwise_delta(sent, received))
            self.on_exchange(source)
