"""Folding a per-dimension input transform into a network's first affine layer.

x -> offset + scale * x (what apply-cmvn does with one speaker's stats) followed by an affine
layer over spliced input frames, W [x_{t+o1}; ...; x_{t+ok}] + b, is the same affine layer with
W' = W diag(tile(scale, k)) and b' = b + W tile(offset, k). A decoder that feeds raw features
(vosk, Kaldi's online2 without CMVN) then computes what the network computes on that speaker's
normalized features, which makes an exact vosk check of a model trained with CMVN possible.
"""
from __future__ import annotations

import numpy as np

from .components.affine import AffineComponent, FixedAffineComponent
from .descriptor import Append, Descriptor, NodeRef, Offset
from .nnet import ComponentNode, DimRangeNode, Nnet, OutputNode


class FoldError(ValueError):
    """The network's input is not read by one affine layer over spliced frames only."""


def fold_input_transform(nnet: Nnet, offset: np.ndarray, scale: np.ndarray, input_name: str = "input") -> str:
    """Folds x -> offset + scale * x of input node `input_name` into the one affine component
    that reads it (in place); returns that component's name."""
    readers = [n for n in nnet.nodes if _reads(n, input_name)]
    if len(readers) != 1 or not isinstance(readers[0], ComponentNode):
        raise FoldError(f"input '{input_name}' must be read by exactly one component node, not by "
                        f"{[n.name for n in readers]}")
    node = readers[0]
    component = nnet.components[node.component]
    if not isinstance(component, (AffineComponent, FixedAffineComponent)):   # NaturalGradientAffine is one
        raise FoldError(f"node {node.name} reads '{input_name}' through {component.type_name}; folding needs "
                        "an affine component")
    pieces = node.input.args if isinstance(node.input, Append) else (node.input,)
    if not all(_frame_of(p, input_name) for p in pieces):
        raise FoldError(f"node {node.name}: input descriptor must splice frames of '{input_name}' only")
    dim = nnet.input_dim(input_name)
    offset, scale = np.asarray(offset, np.float64), np.asarray(scale, np.float64)
    if offset.shape != (dim,) or scale.shape != (dim,):
        raise FoldError(f"transform dims {offset.shape}/{scale.shape} do not match input dim {dim}")
    linear = np.asarray(component.linear_params, np.float64)
    component.bias_params = (component.bias_params + linear @ np.tile(offset, len(pieces))).astype(np.float32)
    component.linear_params = (linear * np.tile(scale, len(pieces))[None, :]).astype(np.float32)
    return node.component


def _frame_of(d: Descriptor, name: str) -> bool:
    return (isinstance(d, NodeRef) and d.name == name) or (isinstance(d, Offset) and d.x == 0
                                                            and _frame_of(d.arg, name))


def _reads(node, name: str) -> bool:
    if isinstance(node, DimRangeNode):
        return node.input_node == name
    if isinstance(node, (ComponentNode, OutputNode)):
        return name in node.input.node_names()
    return False
