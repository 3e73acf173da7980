"""Turning equal-structure chunks into one minibatch of tensors (what nnet3-merge-egs makes)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .chunking import Chunk
from .labels import PDF_LABELS, Labels
from .source import LoadedUtterance


@dataclass(frozen=True)
class Minibatch:
    """N chunks of W output frames each.

    `features[:, left_context + t]` is the input at network time t (edge frames repeated past
    the utterance ends); the outputs are at times k f, k < W, for the frame-subsampling factor f
    (1 but for chain); `targets[:, k]` is the aligned pdf of output k and `weights[:, k]` its
    weight (< 1 where chunks overlap, 0 where the alignment is short); `num_frames` is what the
    objective is normalized by (Kaldi's "over N frames": the sum of the weights; chain: the
    supervision's weight x N x W). A chain minibatch carries the chunks' merged `supervision`
    (its targets are -1 and its weights the deriv weights).  `keys` are Kaldi's eg
    keys `<utt>-<first_frame>`; `position` is the number of planned minibatches of its stream
    up to and including this one (what a resumed stream starts after). `cache`: where a set
    evaluated again and again (`DiagnosticSet`) keeps what the network computes from this
    minibatch alone (model/graph.py's fixed nodes: an LDA), or None.
    """

    features: torch.Tensor            # (N, left_context + W + right_context, feat_dim) float32
    targets: torch.Tensor             # (N, W) int64
    weights: torch.Tensor             # (N, W) float32
    ivectors: torch.Tensor | None     # (N, ivector_dim) float32
    num_frames: float
    left_context: int
    keys: tuple[str, ...]
    position: int
    frame_subsampling_factor: int = 1
    supervision: object = None
    cache: dict | None = field(default=None, compare=False, repr=False)

    @property
    def num_chunks(self) -> int:
        return self.features.shape[0]

    @property
    def input_frames(self) -> int:
        """Network times 0..input_frames-1 span the outputs (W f)."""
        return self.targets.shape[1] * self.frame_subsampling_factor

    @property
    def right_context(self) -> int:
        return self.features.shape[1] - self.left_context - self.input_frames

    def pin_memory(self) -> Minibatch:
        return self._map(lambda t: t.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Minibatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def _map(self, fn) -> Minibatch:
        return replace(self, features=fn(self.features), targets=fn(self.targets),
                       weights=fn(self.weights),
                       ivectors=None if self.ivectors is None else fn(self.ivectors))


def collate(items: Sequence[tuple[str, Chunk, LoadedUtterance]], ivector_period: int,
            position: int, labels: Labels = PDF_LABELS) -> Minibatch:
    """Stack (utterance id, chunk, loaded data) triples that share one chunk structure."""
    structure = items[0][1].structure
    if any(chunk.structure != structure for _, chunk, _ in items):
        raise ValueError("chunks of one minibatch must share contexts and width")
    left, width, right = structure
    num, span = len(items), left + width + right
    f = labels.frame_subsampling_factor
    features = np.empty((num, span, items[0][2].features.shape[1]), dtype=np.float32)
    collated = labels.collate([(utt, chunk, data.targets) for utt, chunk, data in items], width // f)
    with_ivectors = items[0][2].ivectors is not None
    ivectors = (np.empty((num, items[0][2].ivectors.shape[1]), dtype=np.float32)
                if with_ivectors else None)
    for n, (_, chunk, data) in enumerate(items):
        _fill_input(features[n], data.features, chunk.input_start)
        if with_ivectors:
            row = min(chunk.ivector_frame // ivector_period, data.ivectors.shape[0] - 1)
            ivectors[n] = data.ivectors[row]
    return Minibatch(
        features=torch.from_numpy(features), targets=torch.from_numpy(collated.targets),
        weights=torch.from_numpy(collated.weights),
        ivectors=torch.from_numpy(ivectors) if with_ivectors else None,
        num_frames=collated.num_frames, left_context=left,
        keys=tuple(f"{utt}-{chunk.first_frame}" for utt, chunk, _ in items), position=position,
        frame_subsampling_factor=f, supervision=collated.supervision)


def _fill_input(out: np.ndarray, feats: np.ndarray, start: int) -> None:
    """out[i] = feats[clamp(start + i, 0, T - 1)]: rows past either end repeat the edge row."""
    num_frames, span = feats.shape[0], out.shape[0]
    lo, hi = max(0, start), min(num_frames, start + span)
    out[lo - start:hi - start] = feats[lo:hi]
    out[:lo - start] = feats[0]
    out[hi - start:] = feats[num_frames - 1]
