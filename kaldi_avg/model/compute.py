"""`nnet3-compute` semantics: an utterance in independent chunks (kaldi-interface.md 3.4-3.5).

Each chunk of `frames_per_chunk` output frames is its own computation whose recurrent state
starts from zero `extra_left_context` frames before the chunk (the first chunk uses
`extra_left_context_initial` when that is >= 0, the last `extra_right_context_final`);
frames outside the utterance repeat the first/last frame. Chunks of equal shape are batched
along the sequence axis, which changes nothing since they are independent.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@torch.no_grad()
def compute_utterance(module: NnetModule, feats, opts: ChunkOptions, context: tuple[int, int],
                      log_priors: np.ndarray | None = None, ivector: np.ndarray | None = None) -> np.ndarray:
    """Output of node `output` for every frame of `feats` (T, D); minus `log_priors` if given."""
    module.eval()
    device = next(module.buffers(), torch.empty(0)).device
    x = torch.as_tensor(np.asarray(feats, dtype=np.float32), device=device)
    T = x.shape[0]
    groups: dict[tuple[int, int, int], list[_Chunk]] = {}
    for c in plan_chunks(T, context[0], context[1], opts):
        groups.setdefault((c.num, c.left, c.right), []).append(c)
    iv = None if ivector is None else torch.as_tensor(np.asarray(ivector, np.float32), device=device)
    out = None
    for (num, left, right), chunks in groups.items():
        batch = torch.stack([_edge_padded(x, c.first - left, c.first + num - 1 + right) for c in chunks])
        ivs = None if iv is None else iv.expand(len(chunks), -1)
        y = module(batch, left_context=left, num_frames=num, ivectors=ivs)
        if out is None:
            out = torch.empty(T, y.shape[-1], dtype=y.dtype, device=device)
        for c, rows in zip(chunks, y):
            out[c.first:c.first + num] = rows
    result = out.cpu().numpy()
    if log_priors is not None:
        result = result - log_priors[None, :].astype(np.float32)
    return result
