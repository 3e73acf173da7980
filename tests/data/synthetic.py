"""A small synthetic corpus whose feature values name their own frame, so tests can check
exactly which frames landed where."""
from __future__ import annotations

from collections import Counter

import numpy as np

from kaldi_avg.data import UtteranceSource

FEAT_DIM = 3
NUM_PDFS = 50


def utterance_features(index: int, num_frames: int) -> np.ndarray:
    """Column 0 = frame index, column 1 = utterance index, column 2 = a fixed pattern."""
    t = np.arange(num_frames, dtype=np.float32)
    return np.stack([t, np.full(num_frames, index, np.float32), np.sin(t + index)], axis=1)


def utterance_targets(index: int, num_frames: int) -> np.ndarray:
    return (np.arange(num_frames) + index) % NUM_PDFS


class CountingLoader:
    """Feature loader that records every call (to check each utterance is read once)."""

    def __init__(self, features: dict[str, np.ndarray]):
        self.features = features
        self.calls: Counter = Counter()

    def __call__(self, utt: str) -> np.ndarray:
        self.calls[utt] += 1
        return self.features[utt]


def make_source(lengths: dict[str, int], *, ivector_dim: int = 0, ivector_period: int = 10,
                features: dict[str, np.ndarray] | None = None,
                targets: dict[str, np.ndarray] | None = None) -> UtteranceSource:
    order = {utt: i for i, utt in enumerate(sorted(lengths))}
    feats = {utt: utterance_features(order[utt], n) for utt, n in lengths.items()}
    feats.update(features or {})
    tgts = {utt: utterance_targets(order[utt], n) for utt, n in lengths.items()}
    if targets is not None:
        tgts = targets
    ivector_kwargs = {}
    if ivector_dim:
        ivectors = {utt: np.tile(np.arange(-(-n // ivector_period), dtype=np.float32)[:, None],
                                 (1, ivector_dim)) for utt, n in lengths.items()}
        ivector_kwargs = dict(load_ivector=ivectors.__getitem__, ivector_dim=ivector_dim,
                              ivector_period=ivector_period)
    return UtteranceSource(lengths=dict(lengths), load_features=CountingLoader(feats),
                           targets=tgts, feat_dim=FEAT_DIM, num_pdfs=NUM_PDFS, **ivector_kwargs)


def corpus_lengths(num_utts: int, seed: int = 0, low: int = 20, high: int = 200) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    return {f"spk{i % 4}-utt{i:03d}": int(n)
            for i, n in enumerate(rng.integers(low, high, num_utts))}

