"""One flat buffer per replica: module parameters (and gradients) become views into it.

With every parameter a view of one contiguous tensor, each synchronization is a single message and
gradient buckets are plain slices (no packing copies). Autograd accumulates into an existing `.grad`
in place, so gradients land directly in the flat gradient buffer; clear them with `zero_grad()`
(never `optimizer.zero_grad(set_to_none=True)`, which would detach `.grad` from the buffer).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class Replica:
    """What an algorithm needs from one local model replica.

    params: the flat parameter buffer. grads: the flat gradient buffer (gradient algorithms).
    parameters: module parameters that are views into `params`, tiling it in order (lets SSGD start
    each bucket's allreduce as soon as backward has produced it). optimizer_state: returns the local
    optimizer's tensors (momentum etc.) for the average/reset policies."""

    params: torch.Tensor
    grads: torch.Tensor | None = None
    parameters: Sequence[torch.Tensor] = field(default_factory=tuple)
    optimizer_state: Callable[[], list[torch.Tensor]] | None = None
    stats: torch.Tensor | None = None


def _tile(tensors: Sequence[torch.Tensor], dtype: torch.dtype, device) -> torch.Tensor:
    """One flat buffer holding `tensors`, which become views into it (in order)."""
    flat = torch.empty(sum(t.numel() for t in tensors), dtype=dtype, device=device)
    offset = 0
    for t in tensors:
        if t.dtype != dtype or t.device != flat.device:
            raise ValueError("all tensors of one flat buffer must share one dtype and device")
        n = t.numel()
        flat[offset:offset + n].copy_(t.detach().reshape(-1))
        t.data = flat[offset:offset + n].view_as(t)
        offset += n
    return flat


class FlatParams:
    """Re-points `parameters` to views of one flat `params` buffer and their grads into `grads`.

    `statistics` (optional): accumulators that training updates in place besides the parameters,
    such as Kaldi's per-unit activation statistics; they become views of one flat `stats` buffer of
    their own dtype, so Kaldi's model averaging can average them as nnet3-average does. Fixed
    buffers (an LDA matrix) belong to neither: training never changes them, so nothing sends them."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], statistics: Sequence[torch.Tensor] = ()) -> None:
        self.parameters = [p for p in parameters if p.requires_grad]
        if not self.parameters:
            raise ValueError("no trainable parameters")
        first = self.parameters[0]
        self.params = _tile(self.parameters, first.dtype, first.device)
        self.grads = torch.zeros_like(self.params)
        offset = 0
        for p in self.parameters:
            p.grad = self.grads[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
        self.stats = _tile(statistics, statistics[0].dtype, statistics[0].device) if statistics else None

    def zero_grad(self) -> None:
        self.grads.zero_()


def parameter_offsets(flat: torch.Tensor, parameters: Sequence[torch.Tensor]) -> list[tuple[int, int]]:
    """(offset, numel) of each parameter inside `flat`; raises unless they tile it exactly in order."""
    base = flat.data_ptr()
    size = flat.element_size()
    offsets = []
    expected = 0
    for p in parameters:
        if p.data_ptr() < base or (p.data_ptr() - base) % size:
            raise ValueError("parameters are not views of the flat buffer")
        offset = (p.data_ptr() - base) // size
        if offset != expected or not p.is_contiguous():
            raise ValueError("parameters must tile the flat buffer contiguously and in order")
        offsets.append((offset, p.numel()))
        expected += p.numel()
    if expected != flat.numel():
        raise ValueError("parameters do not cover the whole flat buffer")
    return offsets
