"""ADPSGD with delay-by-one (Cui et al., TASLP 2021): the pairwise exchange of round k runs while
round k's gradient is being computed, and that gradient is applied one step late.

Update implemented (reading (a) of docs/algorithms.md 2.9; the paper's Sec. III is to be checked):
    xⁱ_{k+1} = ½(xⁱ_k + xʲ_k) − η·g(xⁱ_{k−1})
At the end of step k−1 each worker posts a nonblocking exchange of its model x_k with its partner of
the round's perfect matching (fixed or randomized ring, as in lock-step ADPSGD); step k's forward and
backward run while the message travels; `after_backward` completes the exchange, averages, and swaps
the fresh gradient g(x_k) with the held g(x_{k−1}), which the optimizer then applies. The first step
applies a zero gradient (and, all replicas being equal, averages nothing); the last computed
gradient is not applied. The staleness is exactly one,
so runs are deterministic and identical in real and simulated form. Defaults: exchange every step.
The reference model after `finalize()` is the average of all workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .adpsgd import ADPSGDOptions
from .averaging import pairwise_delta
from .base import Algorithm, CommEvent, PeriodClock
from .comm import Communicator, Request
from .gossip import round_matching
from .options import AlgorithmOptions, same_as


@dataclass(frozen=True, kw_only=True)
class ADPSGDDelay1Options(AlgorithmOptions):
    pairing: str = same_as(ADPSGDOptions, "pairing")


class ADPSGDDelay1(Algorithm):
    name = "adpsgd-delay1"
    DEFAULT_PERIOD_FRAMES = 0
    Options = ADPSGDDelay1Options
    options: ADPSGDDelay1Options

    def __init__(self, comm: Communicator, n_local: int = 1, options: ADPSGDDelay1Options | None = None) -> None:
        super().__init__(comm, n_local, options)
        self.pairing = self.options.pairing
        self.clock = PeriodClock(self.period_frames)
        self.round = 0
        self.exchanges = 0
        self._sent: list[torch.Tensor | None] = [None] * n_local
        self._received: list[torch.Tensor | None] = [None] * n_local
        self._requests: list[Request] = []
        self.hyperparameters = {"pairing": self.pairing, "form": "stale-gradient"}

    def _on_setup(self) -> None:
        if any(replica.grads is None for replica in self.replicas):
            raise ValueError("delay-by-one needs each replica's flat gradient buffer")
        # Setup leaves all replicas equal, so step 0 has nothing to average: the first exchange is
        # posted at the end of step 0.
        self.held = [torch.zeros_like(p) for p in self.params]

    def after_backward(self, frames=None, replicas=None) -> None:
        self._require_all(replicas)
        self._complete_exchange()
        for replica, held in zip(self.replicas, self.held):
            fresh = replica.grads.clone()
            replica.grads.copy_(held)
            held.copy_(fresh)

    def after_step(self, frames, replicas=None) -> bool:
        self._require_all(replicas)
        self.clock.tick(sum(self._frames_per_replica(frames, self.n_local)))
        if self.clock.due(self.global_scalar_sum, self.n_workers):
            self._post_exchange()
            self.clock.reset(self.global_scalar_sum, self.n_workers)
            return True
        return False

    def sync(self) -> None:
        """Complete any exchange in flight and start the next round now."""
        self._complete_exchange()
        self._post_exchange()

    def finalize(self) -> None:
        self._complete_exchange()
        self.set_all_(self.global_mean(self.params))

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # The round counter picks each round's matching (`round_matching`) and keeps counting across
        # iterations; the period clock (period_frames > 0) keeps the steps since its last exchange.
        clock = self.clock
        return {"round": self.round,
                "clock": {"steps": clock.steps, "frames": clock.frames, "steps_per_period": clock.steps_per_period}}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        clock = state["clock"]
        self.clock.steps, self.clock.frames = int(clock["steps"]), float(clock["frames"])
        self.clock.steps_per_period = clock["steps_per_period"]

    # ---- the overlapped exchange -------------------------------------------------------------
    def _post_exchange(self) -> None:
        partners = round_matching(self.n_workers, self.round, self.pairing, self.seed)
        self.round += 1
        self._sent = [p.clone() for p in self.params]
        self._received = [None] * self.n_local
        for k in range(self.n_local):
            worker, partner = self.first_worker + k, partners[self.first_worker + k]
            if partner is None:
                continue
            self.log.record(CommEvent("pairwise", self.model_bytes, 2, False, (k,)))
            owner, index = divmod(partner, self.n_local)
            if owner == self.comm.rank:
                self._received[k] = self._sent[index]
                continue
            got = self._received[k] = torch.empty_like(self.params[k])
            tag = min(worker, partner)
            self._requests += [self.comm.isend(self._sent[k], owner, tag), self.comm.irecv(got, owner, tag)]

    def _complete_exchange(self) -> None:
        for request in self._requests:
            request.wait()
        self._requests = []
        for k, (sent, got) in enumerate(zip(self._sent, self._received)):
            if sent is not None and got is not None:
                self.params[k].add_(pairwise_delta(sent, got))
                self.exchanges += 1
        self._sent = [None] * self.n_local
        self._received = [None] * self.n_local
