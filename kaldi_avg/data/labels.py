"""What an utterance is trained towards, as the data pipeline handles it: per-frame pdf ids
(cross-entropy: train_rnn.py, train_dnn.py) or, in kaldi_avg/chain/egs.py, a chain supervision.

A `Labels` kind answers three questions, so that screening, loading and collation stay one code
path for both trainers: how many output frames an utterance's labels cover (against
ceil(frames / frame_subsampling_factor), within `length_tolerance`), whether a loaded value is
usable (`check`), and what a minibatch of chunks carries (`collate`: targets, weights, frame
count and, for chain, the merged supervision).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..kaldi.alignment import TARGETS_LENGTH_TOLERANCE
from .chunking import Chunk
from .report import DataError


@dataclass(frozen=True)
class CollatedLabels:
    targets: np.ndarray        # (N, output frames) int64: pdf ids (-1 where a chain minibatch has none)
    weights: np.ndarray        # (N, output frames) float32: frame weights (chain: the deriv weights)
    num_frames: float          # what the objective is normalized by ("over N frames")
    supervision: Any = None    # chain: the minibatch's merged Supervision


class Labels(ABC):
    """The interface (and the cross-entropy kind's defaults: frame rate, tolerance)."""

    frame_subsampling_factor: int = 1
    length_tolerance: int = TARGETS_LENGTH_TOLERANCE

    @abstractmethod
    def length(self, value) -> int:
        """Output frames `value` covers."""

    @abstractmethod
    def check(self, utt: str, value, num_pdfs: int | None):
        """The value a minibatch uses; raises DataError where it cannot be used."""

    @abstractmethod
    def collate(self, items: Sequence[tuple[str, Chunk, Any]], width: int) -> CollatedLabels:
        """The labels of (utterance, chunk, loaded value) with `width` output frames each."""



class PdfLabels(Labels):
    """Alignments as pdf ids: nnet3-get-egs's targets, a frame past their end gets weight 0."""

    def length(self, value) -> int:
        return len(value)

    def check(self, utt: str, value, num_pdfs: int | None) -> np.ndarray:
        targets = np.asarray(value, dtype=np.int64)
        if targets.ndim != 1:
            raise DataError(utt, f"targets have shape {targets.shape}, expected one pdf id per frame")
        if len(targets) and (targets.min() < 0 or (num_pdfs is not None and targets.max() >= num_pdfs)):
            raise DataError(utt, f"pdf ids span [{targets.min()}, {targets.max()}], outside "
                                 f"[0, {num_pdfs}) (alignment from another tree?)")
        return targets

    def collate(self, items, width: int) -> CollatedLabels:
        targets = np.zeros((len(items), width), dtype=np.int64)
        weights = np.zeros((len(items), width), dtype=np.float32)
        for n, (_, chunk, values) in enumerate(items):
            labelled = max(0, min(width, len(values) - chunk.first_frame))
            targets[n, :labelled] = values[chunk.first_frame:chunk.first_frame + labelled]
            weights[n, :labelled] = chunk.weights[:labelled]
        return CollatedLabels(targets, weights, float(weights.sum(dtype=np.float64)))


PDF_LABELS = PdfLabels()
