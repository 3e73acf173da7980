"""H-ADPSGD: hierarchical ADPSGD (Zhang et al., Interspeech 2019). "Learners on the same computing node
construct a super learner via a fast allreduce implementation, and super learners deploy ADPSGD
algorithm among themselves."

Within a group (by default the ranks of one node; `group-size` to choose), every step is synchronous
SGD (the bucketed, overlapped allreduce of `ssgd`), so all members hold the same model. Between groups,
the group leaders gossip asynchronously with the bipartite protocol of `gossip` (groups with an even
index initiate). A leader's communication thread accumulates its pairwise deltas; at each step
boundary the leader broadcasts the accumulated delta to its group and every member adds it, so the
members stay identical and Σ over workers is preserved. In the simulator a group is one unit of the
event clock (its step time is its slowest member's) and the inter-group averaging is atomic.
Defaults: gossip after every step, random partner among the neighbouring groups on the ring, SSGD
defaults inside the group. The reference model after `finalize()` is the average of all workers.
"""
from __future__ import annotations

import contextlib
import socket
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from .adpsgd import ADPSGDOptions
from .averaging import pairwise_delta
from .base import Algorithm, CommEvent, WorkerClock
from .comm import Communicator, LocalCommunicator
from .gossip import GossipThread, PartnerChooser, is_active
from .options import AlgorithmOptions, option, same_as
from .ssgd import SSGD, SSGDOptions


@dataclass(frozen=True, kw_only=True)
class HADPSGDOptions(AlgorithmOptions):
    group_size: int = option(0, "workers per super learner (0: the ranks of one node; required in simulation)")
    pairing: str = same_as(ADPSGDOptions, "pairing")            # partners on the ring of groups
    bucket_mb: float = same_as(SSGDOptions, "bucket_mb")        # the allreduce inside each group
    grad_reduce: str = same_as(SSGDOptions, "grad_reduce")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_group()

    def in_group(self) -> SSGDOptions:
        """The options of the synchronous SGD inside each group."""
        return SSGDOptions(bucket_mb=self.bucket_mb, grad_reduce=self.grad_reduce)


class HierarchicalADPSGD(Algorithm):
    name = "hadpsgd"
    DEFAULT_PERIOD_FRAMES = 0
    Options = HADPSGDOptions
    options: HADPSGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: HADPSGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        group_size = o.group_size
        self.pairing = o.pairing
        self.simulated = comm.size == 1
        if self.simulated:
            if group_size <= 0 or n_local % group_size:
                raise ValueError("in simulation, group-size must be positive and divide the number of workers")
            self.groups = [list(range(g, g + group_size)) for g in range(0, n_local, group_size)]
            self.intra = [SSGD(LocalCommunicator(), group_size, o.in_group()) for _ in self.groups]
            self.group_index = 0
            self.n_groups = len(self.groups)
            self.group_comm = None
            self.leaders_comm = None
        else:
            if n_local != 1:
                raise ValueError("H-ADPSGD across ranks runs one replica per rank")
            color = self._group_color(group_size)
            self.group_comm = comm.split(color, comm.rank)
            self.group_index = color
            self.n_groups = max(comm.allgather_object(color)) + 1
            self.leaders_comm = comm.split(0 if self.group_comm.rank == 0 else None, color)
            self.groups = [[0]]
            self.intra = [SSGD(self.group_comm, 1, o.in_group())]
        for intra in self.intra:
            intra.log = self.log
        self.clocks = [WorkerClock(self.period_frames) for _ in self.groups]
        self.lock = threading.Lock()
        self.thread: GossipThread | None = None
        self.hyperparameters = {"groups": self.n_groups, "pairing": o.pairing, "bucket_mb": o.bucket_mb,
                                "grad_reduce": o.grad_reduce}

    def _group_color(self, group_size: int) -> int:
        if group_size > 0:
            return self.comm.rank // group_size
        hosts = self.comm.allgather_object(socket.gethostname())
        order = list(dict.fromkeys(hosts))
        return order.index(hosts[self.comm.rank])

    @property
    def asynchronous(self) -> bool:
        return True

    def units(self) -> list[list[int]]:
        return [list(group) for group in self.groups]

    @property
    def is_leader(self) -> bool:
        return self.leaders_comm is not None

    def _on_setup(self) -> None:
        for intra, group in zip(self.intra, self.groups):
            intra.setup([self.replicas[k] for k in group])
        first_group = 0 if self.simulated else self.group_index
        self.choosers = [PartnerChooser(first_group + g, self.n_groups, self.pairing, self.seed)
                         for g in range(len(self.groups))]
        self.pending = torch.zeros_like(self.params[0])
        if self.is_leader and self.n_groups > 1:
            assert self.leaders_comm is not None
            self.thread = GossipThread(self.leaders_comm.dup(), self.choosers[0], self._snapshot,
                                       self._accumulate, self._count_exchange)
            self.thread.start()

    def local_update(self) -> AbstractContextManager[Any]:
        return self.lock if self.thread is not None else contextlib.nullcontext()

    def _group_of(self, replicas) -> int:
        if replicas is None:
            if len(self.groups) != 1:
                raise ValueError("say which group stepped (the simulator passes its unit)")
            return 0
        indices = sorted(replicas)
        return self.groups.index(indices)

    # ---- hooks -------------------------------------------------------------------------------
    def after_backward(self, frames=None, replicas=None) -> None:
        self.intra[self._group_of(replicas)].after_backward(frames)

    def after_step(self, frames, replicas=None) -> bool:
        g = self._group_of(replicas)
        self.intra[g].after_step(frames)
        members = self.groups[g]
        per_worker = self._frames_per_replica(frames, len(members))
        if not self.simulated:
            self._apply_pending()
        if self.clocks[g].tick(sum(per_worker) / len(members)):
            self._gossip(g)
            return True
        return False

    def sync(self) -> None:
        """Every local group gossips now (a leader asks its thread for an exchange)."""
        for g in range(len(self.groups)):
            self._gossip(g)

    def finalize(self) -> None:
        if self.thread is not None:
            self.thread.stop()
            self.thread = None
        if not self.simulated:
            self._apply_pending()
        for intra in self.intra:
            intra.finalize()
        self.set_all_(self.global_mean(self.params))

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # finalize() does not restart the group clocks, so the frames (per member) since each local
        # group's last gossip move its next one into the next iteration. The SSGD inside each group
        # carries nothing (it has no resync period; its log is this algorithm's).
        return {"group_frames": [clock.frames for clock in self.clocks]}

    def _load_carry(self, state: dict[str, Any]) -> None:
        if len(state["group_frames"]) != len(self.clocks):
            raise ValueError(f"checkpoint has {len(state['group_frames'])} local groups, not {len(self.clocks)}")
        for clock, frames in zip(self.clocks, state["group_frames"]):
            clock.frames = float(frames)

    # ---- inter-group gossip ------------------------------------------------------------------
    def _gossip(self, g: int) -> None:
        if not self.simulated:
            if self.thread is not None:
                self.thread.request()
            return
        if not is_active(g):
            return
        h = self.choosers[g].next()
        if h is None:
            return
        sent_g = self.params[self.groups[g][0]].clone()
        sent_h = self.params[self.groups[h][0]].clone()
        delta_g, delta_h = pairwise_delta(sent_g, sent_h), pairwise_delta(sent_h, sent_g)
        for k in self.groups[g]:
            self.params[k].add_(delta_g)
        for k in self.groups[h]:
            self.params[k].add_(delta_h)
        self.log.record(CommEvent("pairwise", self.model_bytes, 2, False, tuple(self.groups[g])))

    def _snapshot(self) -> torch.Tensor:
        with self.lock:
            return self.params[0].clone()

    def _accumulate(self, delta: torch.Tensor) -> None:
        with self.lock:
            self.pending.add_(delta)

    def _count_exchange(self, partner: int) -> None:
        self.log.record(CommEvent("pairwise", self.model_bytes, 2, False, (0,)))

    def _apply_pending(self) -> None:
        """Step boundary: the leader's accumulated gossip deltas reach every member of the group."""
        assert self.group_comm is not None
        with self.local_update():
            delta = self.pending.clone()
            self.pending.zero_()
        if self.group_comm.size > 1:
            self.group_comm.broadcast_(delta, 0)
            self.log.record(CommEvent("broadcast", self.model_bytes, self.group_comm.size, True))
        with self.local_update():
            self.params[0].add_(delta)
