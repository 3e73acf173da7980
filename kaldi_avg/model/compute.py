"""`nnet3-compute` semantics: an utterance in independent chunks (docs/kaldi-formats.md 3.4-3.5,
7.1; Kaldi's src/nnet3/nnet-am-decodable-simple.cc `EnsureFrameIsComputed`).

Each chunk of `frames_per_chunk` output frames is its own computation on the input frames from
model left + `extra_left_context` before it to model right + `extra_right_context` after it:
forward recurrences start from zero state at its first input frame, backward ones (BLSTMs) at
its last. The first chunk uses `extra_left_context_initial` and the last
`extra_right_context_final` instead where those are >= 0; frames outside the utterance repeat
the first/last frame. Chunks of equal shape, of one utterance or of many, are batched along
the sequence axis, which changes nothing since they are independent.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .graph import NnetModule


@dataclass
class ChunkOptions:
    frames_per_chunk: int = 50
    extra_left_context: int = 0
    extra_right_context: int = 0
    extra_left_context_initial: int = -1
    extra_right_context_final: int = -1

    def __post_init__(self):
        if self.frames_per_chunk < 1:
            raise ValueError("--frames-per-chunk must be > 0")
        if self.extra_left_context < 0 or self.extra_right_context < 0:
            raise ValueError("--extra-left-context and --extra-right-context must be >= 0")


@dataclass(frozen=True)
class _Chunk:
    first: int  # first output frame
    num: int  # output frames
    left: int  # input frames before `first`
    right: int  # input frames after the last output frame


def plan_chunks(num_frames: int, model_left: int, model_right: int, opts: ChunkOptions) -> list[_Chunk]:
    chunks = []
    for first in range(0, num_frames, opts.frames_per_chunk):
        num = min(opts.frames_per_chunk, num_frames - first)
        extra_left = (opts.extra_left_context_initial if first == 0 and opts.extra_left_context_initial >= 0
                      else opts.extra_left_context)
        last = first + num == num_frames
        extra_right = (opts.extra_right_context_final if last and opts.extra_right_context_final >= 0
                       else opts.extra_right_context)
        chunks.append(_Chunk(first, num, model_left + extra_left, model_right + extra_right))
    return chunks


def _edge_padded(feats: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    idx = torch.arange(lo, hi + 1, device=feats.device).clamp(0, feats.shape[0] - 1)
    return feats[idx]


def compute_utterance(module: NnetModule, feats, opts: ChunkOptions, context: tuple[int, int],
                      log_priors: np.ndarray | None = None, ivector: np.ndarray | None = None) -> np.ndarray:
    """Output of node `output` for every frame of `feats` (T, D); minus `log_priors` if given."""
    [(_, out)] = compute_utterances(module, [(None, feats, ivector)], opts, context, log_priors)
    return out


@torch.no_grad()
def compute_utterances(module: NnetModule, utterances: Iterable[tuple[Any, Any, np.ndarray | None]],
                       opts: ChunkOptions, context: tuple[int, int], log_priors: np.ndarray | None = None,
                       utterances_per_batch: int = 256) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, output) for each (key, feats, ivector-or-None), in order. The chunks of up to
    `utterances_per_batch` utterances are computed together, one forward per chunk shape:
    a recurrent network's cost here is per time step, not per chunk."""
    module.eval()
    block: list[tuple[Any, Any, np.ndarray | None]] = []
    for item in utterances:
        block.append(item)
        if len(block) == utterances_per_batch:
            yield from _compute_block(module, block, opts, context, log_priors)
            block = []
    if block:
        yield from _compute_block(module, block, opts, context, log_priors)


def _compute_block(module: NnetModule, block, opts: ChunkOptions, context: tuple[int, int],
                   log_priors: np.ndarray | None) -> list[tuple[Any, np.ndarray]]:
    device = next(module.buffers(), torch.empty(0)).device
    feats = [torch.as_tensor(np.asarray(f, dtype=np.float32), device=device) for _, f, _ in block]
    ivectors = [None if iv is None else torch.as_tensor(np.asarray(iv, np.float32), device=device)
                for _, _, iv in block]
    groups: dict[tuple[int, int, int], list[tuple[int, _Chunk]]] = {}
    for u, x in enumerate(feats):
        for c in plan_chunks(x.shape[0], context[0], context[1], opts):
            groups.setdefault((c.num, c.left, c.right), []).append((u, c))
    outs: list[torch.Tensor | None] = [None] * len(block)
    for (num, left, right), chunks in groups.items():
        batch = torch.stack([_edge_padded(feats[u], c.first - left, c.first + num - 1 + right) for u, c in chunks])
        ivs = None if ivectors[chunks[0][0]] is None else torch.stack([ivectors[u] for u, _ in chunks])
        y = module(batch, left_context=left, num_frames=num, ivectors=ivs)
        for (u, c), rows in zip(chunks, y):
            if outs[u] is None:
                outs[u] = torch.empty(feats[u].shape[0], y.shape[-1], dtype=y.dtype, device=device)
            outs[u][c.first:c.first + num] = rows
    priors = None if log_priors is None else np.asarray(log_priors, dtype=np.float32)[None, :]
    return [(key, out.cpu().numpy() if priors is None else out.cpu().numpy() - priors)
            for (key, _, _), out in zip(block, outs)]
