"""Synchronous SGD with a bucketed gradient allreduce that overlaps the backward pass.

The flat gradient buffer is cut into buckets of about `bucket-mb` MB, in reverse parameter order
(the order backward produces gradients). When the replicas' parameters are given (`Replica.parameters`),
a post-accumulate-grad hook counts each bucket's parameters as their gradients land, and a bucket's
nonblocking allreduce starts as soon as it is complete, while backward continues with earlier layers.
Buckets always start in index order, so every rank issues the same collectives in the same order.
(gloo progresses them in its own threads; MPICH needs MPICH_ASYNC_PROGRESS=1 to do the same.)
`after_backward` starts whatever is left, waits, and normalizes:

* mean (default, DDP's convention): the mean of the workers' gradients; with per-worker mean losses
  and equal batches this is exactly one process with batch N·b;
* sum: their sum (losses summed over frames, Kaldi's convention: equivalent to lr × N);
* frame-normalized: their sum divided by the frames of all workers this step (summed losses, giving
  the exact mean-loss gradient of the combined batch even when workers' frame counts differ).

Parameters never drift apart when the reduction is bitwise identical on all ranks; MPI only
recommends that, so `ssgd-resync-steps` can re-broadcast worker 0's parameters every so many steps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Algorithm, CommEvent
from .comm import Communicator, Request
from .flat import parameter_offsets
from .options import AlgorithmOptions, option

GRAD_REDUCTIONS = ("mean", "sum", "frame-normalized")


def plan_buckets(offsets: Sequence[tuple[int, int]], bucket_elems: int) -> list[tuple[int, int, list[int]]]:
    """Buckets as (start, end, parameter indices), built from the last parameter backwards."""
    buckets: list[tuple[int, int, list[int]]] = []
    members: list[int] = []
    size = 0
    for index in reversed(range(len(offsets))):
        members.append(index)
        size += offsets[index][1]
        if size >= bucket_elems or index == 0:
            start = offsets[members[-1]][0]
            end = offsets[members[0]][0] + offsets[members[0]][1]
            buckets.append((start, end, members))
            members, size = [], 0
    return buckets


def plan_chunks(numel: int, bucket_elems: int) -> list[tuple[int, int, list[int]]]:
    """Fixed-size buckets from the end of the buffer backwards (no parameter boundaries known)."""
    buckets = []
    end = numel
    while end > 0:
        start = max(0, end - bucket_elems)
        buckets.append((start, end, []))
        end = start
    return buckets


@dataclass(frozen=True, kw_only=True)
class SSGDOptions(AlgorithmOptions):
    bucket_mb: float = option(4.0, "gradient bucket size in MB (DDP uses 25)")
    grad_reduce: str = option("mean", "gradient reduction: mean, sum or frame-normalized", GRAD_REDUCTIONS)
    ssgd_resync_steps: int = option(0, "re-broadcast worker 0's parameters every so many steps (0: never)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bucket_mb <= 0:
            raise ValueError("bucket-mb must be positive")


class SSGD(Algorithm):
    name = "ssgd"
    DEFAULT_PERIOD_FRAMES = 0
    Options = SSGDOptions
    options: SSGDOptions

    def __init__(self, comm: Communicator, n_local: int = 1, options: SSGDOptions | None = None) -> None:
        super().__init__(comm, n_local, options)
        o = self.options
        self.bucket_mb = o.bucket_mb
        self.grad_reduce = o.grad_reduce
        self.resync_steps = o.ssgd_resync_steps
        self.steps = 0
        self._hooks: list[Any] = []
        self.hyperparameters = {"bucket_mb": o.bucket_mb, "grad_reduce": o.grad_reduce,
                                "resync_steps": o.ssgd_resync_steps}

    def _on_setup(self) -> None:
        if any(replica.grads is None for replica in self.replicas):
            raise ValueError("SSGD needs each replica's flat gradient buffer")
        first = self.replicas[0]
        bucket_elems = max(1, int(self.bucket_mb * 2**20) // first.params.element_size())
        if first.parameters:
            offsets = parameter_offsets(first.params, first.parameters)
            for replica in self.replicas:
                if parameter_offsets(replica.params, replica.parameters) != offsets:
                    raise ValueError("all replicas must have the same parameter layout")
            self.buckets = plan_buckets(offsets, bucket_elems)
            self._register_hooks(len(offsets))
        else:
            self.buckets = plan_chunks(first.params.numel(), bucket_elems)
        self._reset_buckets()

    def _register_hooks(self, n_params: int) -> None:
        bucket_of = [0] * n_params
        for b, (_, _, members) in enumerate(self.buckets):
            for index in members:
                bucket_of[index] = b
        for replica in self.replicas:
            for index, p in enumerate(replica.parameters):
                self._hooks.append(p.register_post_accumulate_grad_hook(
                    lambda _, b=bucket_of[index]: self._parameter_ready(b)))

    def detach(self) -> None:
        """Remove the backward hooks (gradients are then reduced only in `after_backward`)."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _reset_buckets(self) -> None:
        self._ready = [0] * len(self.buckets)
        self._requests: list[Request | None] = [None] * len(self.buckets)
        self._next = 0

    # ---- reduction ---------------------------------------------------------------------------
    def _parameter_ready(self, bucket: int) -> None:
        self._ready[bucket] += 1
        while (self._next < len(self.buckets)
               and self._ready[self._next] == len(self.buckets[self._next][2]) * self.n_local):
            self._launch(self._next)

    def _launch(self, bucket: int) -> None:
        start, end, _ = self.buckets[bucket]
        first = self.replicas[0].grads[start:end]
        for replica in self.replicas[1:]:
            first += replica.grads[start:end]
        self._requests[bucket] = self.comm.iallreduce_sum_(first)
        self._next = bucket + 1

    def after_backward(self, frames=None, replicas=None) -> None:
        self._require_all(replicas)
        while self._next < len(self.buckets):
            self._launch(self._next)
        if self.grad_reduce == "frame-normalized":
            if frames is None:
                raise ValueError("frame-normalized reduction needs this step's frames")
            divisor = self.global_scalar_sum(sum(self._frames_per_replica(frames, self.n_local)))
        else:
            divisor = float(self.n_workers) if self.grad_reduce == "mean" else 1.0
        for request in self._requests:
            assert request is not None
            request.wait()
        reduced = self.replicas[0].grads
        if divisor != 1.0:
            reduced.div_(divisor)
        for replica in self.replicas[1:]:
            replica.grads.copy_(reduced)
        self.log.record(CommEvent("allreduce", self.model_bytes, self.n_workers, True))
        self._reset_buckets()

    def after_step(self, frames, replicas=None) -> bool:
        self._require_all(replicas)
        self.steps += 1
        if self.resync_steps and self.steps % self.resync_steps == 0:
            self.sync()
            return True
        return False

    def sync(self) -> None:
        """Make the replicas bitwise identical again (worker 0's parameters everywhere)."""
        self.broadcast_from_worker_(0)

    def finalize(self) -> None:
        self.detach()

    # ---- resume: what outlives finalize() -> setup() ----------------------------------------------
    def _carry(self) -> dict[str, Any]:
        # The step count keeps counting across iterations, so `ssgd-resync-steps` re-broadcasts at the
        # same steps (and with the same communication) whether or not the run was interrupted.
        return {"steps": self.steps}

    def _load_carry(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
