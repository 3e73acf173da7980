"""ADPSGD: asynchronous decentralized parallel SGD (Lian et al., ICML 2018), with the fixed and
randomized ring pairings of Cui et al. (TASLP 2021).

After each local step (or each `period_frames`), a worker averages its model with one partner:
xⁱ, xʲ ← (xⁱ + xʲ)/2. Every averaging is applied as the pairwise delta (xʲ_sent − xⁱ_sent)/2 on one
side and its negation on the other, so Σᵢ xⁱ is preserved exactly even while the compute thread keeps
stepping; the averaging never drops a gradient step that landed meanwhile.

* Asynchronous (default). Real runs: a communication thread per rank (MPI_THREAD_MULTIPLE) with the
  deadlock-free bipartite protocol of `gossip` (even workers initiate, odd workers serve); the compute
  thread never waits for it. Hold `local_update()` while the optimizer steps; forward and backward
  read the model without the lock (a stale or half-averaged read, which Lian et al.'s analysis
  allows). Simulated runs: the same partner choice, applied atomically at the worker's step events.
* Lock-step (`adpsgd-lockstep`): a perfect matching per round (`gossip.round_matching`), exchanged
  with Sendrecv: deterministic, identical in real and simulated runs.

Defaults: average after every local step (period 0), random choice among the ring neighbours
(Lian et al.'s random neighbour; `pairing ring` alternates them, the fixed ring). IBM scale the
learning rate with the total batch N·b, as for SSGD. The reference model after `finalize()` is the
average of all workers (Lian et al.'s output).
"""
from __future__ import annotations

import contextlib
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from .averaging import pairwise_delta
from .base import Algorithm, CommEvent, PeriodClock, WorkerClock
from .comm import Communicator
from .gossip import PAIRINGS, GossipThread, PartnerChooser, round_matching
from .options import AlgorithmOptions, option


@dataclass(frozen=True, kw_only=True)
class ADPSGDOptions(AlgorithmOptions):
    pairing: str = option("random", "gossip partner choice on the ring: random (randomized ring) or ring (fixed "
                          "alternation)", PAIRINGS)
    adpsgd_lockstep: bool = option(False, "deterministic lock-step rounds of perfect matchings")


class ADPSGD(Algorithm):
    name = "adpsgd"
    DEFAULT_PERIOD_FRAMES = 0
    Options = ADPSGDOptions
    options: ADPSGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: ADPSGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.pairing = o.pairing
        self.lockstep = o.adpsgd_lockstep
        self.threaded = not o.adpsgd_lockstep and comm.size > 1
        if self.threaded and n_local != 1:
            raise ValueError("asynchronous ADPSGD across ranks runs one replica per rank")
        if self.threaded and not comm.thread_safe:
            raise RuntimeError("asynchronous ADPSGD needs MPI_THREAD_MULTIPLE (or use adpsgd-lockstep)")
        self.clock = PeriodClock(self.period_frames)
        self.worker_clocks = [WorkerClock(self.period_frames) for _ in range(n_local)]
        self.round = 0
        self.exchanges = 0
        self.lock = threading.Lock()
        self.thread: GossipThread | None = None
        self.hyperparameters = {"pairing": o.pairing, "lockstep": o.adpsgd_lockstep}

    @property
    def asynchronous(self) -> bool:
        return not self.lockstep

    def _on_setup(self) -> None:
        self.choosers = [PartnerChooser(self.first_worker + k, self.n_workers, self.pairing, self.seed)
                         for k in range(self.n_local)]
        if self.threaded:
            self.thread = GossipThread(self.comm.dup(), self.choosers[0], self._snapshot, self._apply_delta,
                                       self._count_exchange)
            self.thread.start()

    def local_update(self) -> AbstractContextManager[Any]:
        return self.lock if self.threaded else contextlib.nullcontext()

    # ---- hooks -------------------------------------------------------------------------------
    def after_step(self, frames, replicas=None) -> bool:
        indices = self._indices(replicas)
        per_replica = self._frames_per_replica(frames, len(indices))
        if self.lockstep:
            self._require_all(replicas)
            self.clock.tick(sum(per_replica))
            if self.clock.due(self.global_scalar_sum, self.n_workers):
                self.sync()
                return True
            return False
        for k, f in zip(indices, per_replica):
            if self.worker_clocks[k].tick(f):
                self._gossip(k)
        return False

    def sync(self) -> None:
        """Lock-step: one round of pairwise averaging. Asynchronous: every local worker gossips now."""
        if self.lockstep:
            self._lockstep_round()
            self.clock.reset(self.global_scalar_sum, self.n_workers)
            return
        for k in range(self.n_local):
            self._gossip(k)

    def stop_gossip(self) -> None:
        """Collective: end the communication threads (replicas keep their own models)."""
        if self.thread is not None:
            self.thread.stop()
            self.thread = None

    def finalize(self) -> None:
        self.stop_gossip()
        self.set_all_(self.global_mean(self.params))

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # Asynchronous: finalize() does not restart the worker clocks, so the frames since each
        # worker's last gossip move its next one into the next iteration. Lock-step: the round counter
        # picks each round's matching (`round_matching`) and keeps counting across iterations; the
        # period clock (period_frames > 0) keeps the steps since its last round and its agreed rate.
        clock = self.clock
        return {"worker_frames": [c.frames for c in self.worker_clocks], "round": self.round,
                "clock": {"steps": clock.steps, "frames": clock.frames, "steps_per_period": clock.steps_per_period}}

    def _load_carry(self, state: dict[str, Any]) -> None:
        if len(state["worker_frames"]) != self.n_local:
            raise ValueError(f"checkpoint has {len(state['worker_frames'])} local workers, not {self.n_local}")
        for worker_clock, frames in zip(self.worker_clocks, state["worker_frames"]):
            worker_clock.frames = float(frames)
        self.round = int(state["round"])
        clock = state["clock"]
        self.clock.steps, self.clock.frames = int(clock["steps"]), float(clock["frames"])
        self.clock.steps_per_period = clock["steps_per_period"]

    # ---- asynchronous gossip -----------------------------------------------------------------
    def _gossip(self, k: int) -> None:
        if self.thread is not None:
            self.thread.request()
            return
        partner = self.choosers[k].next()
        if partner is None:
            return
        j = partner - self.first_worker
        sent_k, sent_j = self.params[k].clone(), self.params[j].clone()
        self.params[k].add_(pairwise_delta(sent_k, sent_j))
        self.params[j].add_(pairwise_delta(sent_j, sent_k))
        self._count_exchange(partner)
        self.log.record(CommEvent("pairwise", self.model_bytes, 2, False, (k, j)))

    def _snapshot(self) -> torch.Tensor:
        with self.lock:
            return self.params[0].clone()

    def _apply_delta(self, delta: torch.Tensor) -> None:
        with self.lock:
            self.params[0].add_(delta)

    def _count_exchange(self, partner: int) -> None:
        self.exchanges += 1
        if self.thread is not None:
            self.log.record(CommEvent("pairwise", self.model_bytes, 2, False, (0,)))

    # ---- lock-step rounds --------------------------------------------------------------------
    def _lockstep_round(self) -> None:
        partners = round_matching(self.n_workers, self.round, self.pairing, self.seed)
        self.round += 1
        sent = [p.clone() for p in self.params]
        received: list[torch.Tensor | None] = [None] * self.n_local
        requests = []
        for k in range(self.n_local):
            worker, partner = self.first_worker + k, partners[self.first_worker + k]
            if partner is None:
                continue
            owner, index = divmod(partner, self.n_local)
            if owner == self.comm.rank:
                received[k] = sent[index]
                continue
            received[k] = torch.empty_like(sent[k])
            tag = min(worker, partner)
            requests += [self.comm.isend(sent[k], owner, tag), self.comm.irecv(received[k], owner, tag)]
        for request in requests:
            request.wait()
        for k, got in enumerate(received):
            if got is not None:
                self.params[k].add_(pairwise_delta(sent[k], got))
                self.exchanges += 1
                self.log.record(CommEvent("pairwise", self.model_bytes, 2, True, (k,)))
