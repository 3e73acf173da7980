"""Chain egs without an egs dump: the supervision half of `nnet3-chain-get-egs` and
`nnet3-chain-merge-egs` as the data pipeline's labels (docs/chain.md 9.3).

Each utterance's supervision (chain-get-supervision's, at the output frame rate; stage -3 of
chain/train.py writes them as `supervision.N.ark`) is the utterance's target. A chunk of input
frames [s, s + W) trains output frames s / f .. (s + W) / f - 1: its supervision is that frame
range (`SupervisionSplitter`) composed with normalization.fst, its deriv weights the chunk's
output weights (1 / the number of chunks sharing a frame); a minibatch carries the merged
supervision of its chunks, their deriv weights in (chunk, frame) order and, as its frame count,
Kaldi's supervision weight x chunks x frames.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping, Sequence

import kaldifst
import numpy as np

from ..data.chunking import Chunk
from ..data.labels import CollatedLabels, Labels
from ..data.report import DataError
from .supervision import SupervisionSplitter, chunk_supervision
from .supervision_io import Supervision, merge_supervisions, read_supervisions

SUPERVISION_LENGTH_TOLERANCE = 1   # nnet3-chain-get-egs --supervision-length-tolerance


class ChainLabels(Labels):
    """Chain supervisions as the pipeline's labels (module docstring)."""

    length_tolerance = SUPERVISION_LENGTH_TOLERANCE

    def __init__(self, normalization_fst: kaldifst.StdVectorFst, frame_subsampling_factor: int):
        self.normalization_fst = normalization_fst
        self.frame_subsampling_factor = frame_subsampling_factor

    def length(self, value: Supervision) -> int:
        return value.frames_per_sequence

    def check(self, utt: str, value: Supervision, num_pdfs: int | None) -> SupervisionSplitter:
        if num_pdfs is not None and value.label_dim != num_pdfs:
            raise DataError(utt, f"its supervision has {value.label_dim} pdfs, the tree {num_pdfs} "
                                 "(supervisions from another tree?)")
        return SupervisionSplitter(value)

    def collate(self, items: Sequence[tuple[str, Chunk, SupervisionSplitter]], width: int) -> CollatedLabels:
        f = self.frame_subsampling_factor
        parts = [chunk_supervision(splitter, chunk, f, self.normalization_fst) for _, chunk, splitter in items]
        weights = np.zeros((len(items), width), dtype=np.float32)
        for n, (_, chunk, _) in enumerate(items):
            weights[n] = chunk.weights
        sup = merge_supervisions(parts)
        return CollatedLabels(np.full((len(items), width), -1, dtype=np.int64), weights,
                              sup.weight * len(items) * width, sup)


def supervision_archives(directory: str) -> list[str]:
    """supervision.N.ark in N order."""
    def number(path: str) -> int:
        return int(re.search(r"supervision\.(\d+)\.ark$", path).group(1))
    return sorted(glob.glob(os.path.join(directory, "supervision.*.ark")), key=number)


def read_supervision_archives(paths: Sequence[str]) -> Mapping[str, Supervision]:
    """Every utterance's supervision (an utterance in two archives is an error naming both)."""
    out: dict[str, Supervision] = {}
    where: dict[str, str] = {}
    for path in paths:
        for key, sup in read_supervisions(path):
            if key in out:
                raise DataError(key, f"its supervision is in both {where[key]} and {path}")
            out[key], where[key] = sup, path
    return out


__all__ = ["ChainLabels", "SUPERVISION_LENGTH_TOLERANCE", "read_supervision_archives",
           "supervision_archives"]
