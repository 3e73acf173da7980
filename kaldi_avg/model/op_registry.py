"""The torch side of each nnet3 component type, declared in one place (docs/kaldi-formats.md
section 4): `register_op(SomeComponent, ...)` on the function that applies the type, with the
tensors its op owns, its natural-gradient update and the statistics training accumulates for it.
`ops.ComponentOp` looks its component's type up here when it is built, so a type without an op
fails there, in one line. The Kaldi classes register themselves the same way
(`kaldi/nnet3/components/base.py`), so adding a component is its Kaldi class, its
`register_op` (`ops.py`) and its tests; `missing_ops` lists the Kaldi types that have neither an
op nor a place in `NOT_RUNNABLE`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from ..kaldi.nnet3.components import Component
from ..kaldi.nnet3.config import NetworkConfigError
from .natural_gradient import NaturalGradientPass, OnlineNaturalGradient

if TYPE_CHECKING:
    from .ops import ComponentOp


class Frames(NamedTuple):
    """Where the rows of one forward call lie (`ComponentOp.forward` says what each one is)."""
    times: torch.Tensor | None
    out_times: torch.Tensor | None
    first_frame: int | None
    frame_stride: int = 1    # the rows of x[:, k] lie at frame first_frame + k frame_stride


Forward = Callable[["ComponentOp", torch.Tensor, Frames], torch.Tensor]
Gradients = tuple[torch.Tensor | None, ...]


@dataclass(frozen=True)
class NaturalGradient:
    """A type's use of Kaldi's NG-SGD: the trainable tensors whose gradient it replaces (those of
    them the component has), the preconditioners a component gets (none where the component has
    it switched off), and the update turning one computation's plain gradients into Kaldi's."""
    params: tuple[str, ...]
    preconditioners: Callable[[Component], tuple[OnlineNaturalGradient, ...]]
    update: Callable[[ComponentOp, NaturalGradientPass, Gradients], Gradients]


class Statistics:
    """What training accumulates for a type besides gradients (Kaldi's component statistics):
    `init` adds its buffers to the op, `write_back` copies them into the component, `zero` is
    Component::ZeroStats. The base accumulates nothing."""

    def init(self, op: ComponentOp) -> None:
        pass

    def write_back(self, op: ComponentOp) -> None:
        pass

    def zero(self, op: ComponentOp) -> None:
        pass


def _no_tensors(c: Component) -> dict[str, np.ndarray]:
    return {}


def _nothing(c: Component) -> None:
    return None


@dataclass(frozen=True)
class OpSpec:
    """How `ComponentOp` runs one component type. `tensors`: the arrays the op holds (those in
    `Component.params()` as parameters, the rest as buffers); `check` raises NetworkConfigError for
    settings kaldi-avg cannot run; `precompute` makes `op.precomputed` once per op."""
    forward: Forward
    tensors: Callable[[Component], dict[str, np.ndarray]] = _no_tensors
    natural_gradient: NaturalGradient | None = None
    statistics: Statistics = Statistics()
    check: Callable[[Component], None] = _nothing
    precompute: Callable[[Component], object] = _nothing


_OPS: dict[str, OpSpec] = {}
# Kaldi types that kaldi-avg reads and writes but does not run (none today).
NOT_RUNNABLE: frozenset[str] = frozenset()


def register_op(*classes: type[Component], **spec: object) -> Callable[[Forward], Forward]:
    """Decorator: the forward function of `classes`; `spec` the rest of their `OpSpec`."""
    def register(forward: Forward) -> Forward:
        op = OpSpec(forward, **spec)
        for cls in classes:
            if cls.type_name in _OPS:
                raise TypeError(f"op for component type {cls.type_name} registered twice")
            _OPS[cls.type_name] = op
        return forward
    return register


def supported_types() -> frozenset[str]:
    return frozenset(_OPS)


def op_spec(type_name: str) -> OpSpec:
    spec = _OPS.get(type_name)
    if spec is None:
        raise NetworkConfigError(f"component type {type_name} has no PyTorch implementation in kaldi-avg "
                          f"(supported: {', '.join(sorted(_OPS))})")
    return spec


def missing_ops(type_names: Iterable[str]) -> list[str]:
    """The names among `type_names` with no op that are not declared `NOT_RUNNABLE`."""
    return [t for t in type_names if t not in _OPS and t not in NOT_RUNNABLE]
