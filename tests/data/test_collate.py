"""Collation: edge padding, targets, weights, i-vectors."""
import numpy as np
import pytest
import torch

from kaldi_avg.data import Chunk, LoadedUtterance, collate

from .synthetic import utterance_features


def loaded(num_frames, num_targets=None, ivectors=None):
    return LoadedUtterance(utterance_features(7, num_frames),
                           np.arange(num_targets if num_targets is not None else num_frames) + 100,
                           ivectors)


def chunk(first, width, left, right, weights=None, ivector_frame=0):
    return Chunk(first, width, left, right, tuple(weights or [1.0] * width), ivector_frame)


def test_input_rows_repeat_edge_frames_and_line_up_with_outputs():
    data = loaded(30)
    items = [("u", chunk(0, 20, 4, 3), data), ("u", chunk(10, 20, 4, 3), data)]
    mb = collate(items, ivector_period=1, position=5)
    assert mb.features.shape == (2, 27, 3) and mb.features.dtype == torch.float32
    assert (mb.left_context, mb.right_context, mb.num_chunks, mb.position) == (4, 3, 2, 5)
    frame_of_row = mb.features[:, :, 0].numpy()
    assert frame_of_row[0].tolist() == [0] * 5 + list(range(1, 23))
    assert frame_of_row[1].tolist() == list(range(6, 30)) + [29] * 3
    for n, first in enumerate([0, 10]):  # features[:, left + k] is output frame k
        assert frame_of_row[n, 4:24].tolist() == list(range(first, first + 20))
    assert mb.targets[1].tolist() == list(range(110, 130))
    assert mb.keys == ("u-0", "u-10")


def test_weights_and_short_alignment():
    data = loaded(30, num_targets=28)
    weights = [1.0] * 10 + [0.5] * 10
    mb = collate([("u", chunk(10, 20, 0, 0, weights), data)], ivector_period=1, position=1)
    assert mb.targets.dtype == torch.int64
    assert mb.targets[0, :18].tolist() == list(range(110, 128))
    assert mb.targets[0, 18:].tolist() == [0, 0]
    assert mb.weights[0].tolist() == [1.0] * 10 + [0.5] * 8 + [0.0, 0.0]
    assert mb.num_frames == pytest.approx(14.0)


def test_ivector_row_of_the_chosen_frame():
    ivectors = np.arange(4, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    data = loaded(35, ivectors=ivectors)
    items = [("u", chunk(0, 10, 0, 0, ivector_frame=f), data) for f in (0, 9, 10, 34)]
    mb = collate(items, ivector_period=10, position=1)
    assert mb.ivectors.shape == (4, 2)
    assert mb.ivectors[:, 0].tolist() == [0, 0, 1, 3]


def test_mixed_structures_are_refused_and_to_device_keeps_values():
    data = loaded(30)
    with pytest.raises(ValueError, match="share"):
        collate([("u", chunk(0, 20, 0, 0), data), ("u", chunk(5, 20, 1, 0), data)], 1, 1)
    mb = collate([("u", chunk(0, 20, 2, 0), data)], 1, 1)
    moved = mb.to("cpu")
    assert torch.equal(moved.features, mb.features) and moved.ivectors is None
