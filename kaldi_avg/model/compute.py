"""`nnet3-compute` semantics: an utterance in independent chunks (docs/kaldi-formats.md 3.4-3.5,
7.1; Kaldi's src/nnet3/nnet-am-decodable-simple.cc `EnsureFrameIsComputed`, `CheckAndFixConfigs`).

Each chunk of `frames_per_chunk` output frames is its own computation on the input frames from
model left + `extra_left_context` before it to model right + `extra_right_context` after it:
forward recurrences start from zero state at its first input frame, backward ones (BLSTMs) at
its last. The first chunk uses `extra_left_context_initial` and the last
`extra_right_context_final` instead where those are >= 0; frames outside the utterance repeat
the first/last frame. Chunks of equal shape, of one utterance or of many, are batched along
the sequence axis, which changes nothing since they are independent.

With `frame_subsampling_factor` f > 1 (chain models) the network is evaluated at output frames
t = 0, f, 2f, ... only, ceil(T / f) rows; `frames_per_chunk` is first rounded up to a multiple of
lcm(f, the network's modulus), as Kaldi does for any f, so each chunk holds frames_per_chunk / f
of those rows. A chunk's computation asks for those frames alone (`output_stride`: the layers
above a splice of multiples of f run at every f-th frame only), from the same input frames
Kaldi's request reads.

A network with an `ivector` input gets one i-vector per chunk: the utterance's own, or the row of
its online i-vectors (one per `online_ivector_period` frames) that nnet3-compute chooses for the
chunk (`online_ivector_row`, docs/kaldi-formats.md 3.5).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.report import DataError
from .graph import NnetModule

# GetCurrentIvector: online i-vectors may end at most this many frames before the frame a chunk
# needs ("half a second seems like too long to be explainable as edge effects").
IVECTOR_EDGE_FRAMES = 50


@dataclass(frozen=True)
class ChunkOptions:
    frames_per_chunk: int = 50
    extra_left_context: int = 0
    extra_right_context: int = 0
    extra_left_context_initial: int = -1
    extra_right_context_final: int = -1
    online_ivector_period: int = 0  # frames per row of online i-vectors (--online-ivector-period)
    frame_subsampling_factor: int = 1  # output every f-th frame (--frame-subsampling-factor, chain)

    def __post_init__(self):
        if self.frames_per_chunk < 1 or self.frame_subsampling_factor < 1:
            raise ValueError("--frame-subsampling-factor and --frames-per-chunk must be > 0")
        if self.extra_left_context < 0 or self.extra_right_context < 0:
            raise ValueError("--extra-left-context and --extra-right-context must be >= 0")


@dataclass(frozen=True)
class _Chunk:
    first: int  # first output frame (input frame rate)
    num: int  # output rows (every `step`-th frame from `first`)
    left: int  # input frames before `first`
    right: int  # input frames after the last output frame
    step: int = 1  # the frame subsampling factor

    @property
    def span(self) -> int:
        """Frames from the first output frame to the last, both included."""
        return (self.num - 1) * self.step + 1


def rounded_frames_per_chunk(opts: ChunkOptions, modulus: int = 1) -> int:
    """`CheckAndFixConfigs`: --frames-per-chunk rounded up to a multiple of lcm(frame subsampling
    factor, the network's modulus)."""
    n = math.lcm(opts.frame_subsampling_factor, modulus)
    return n * -(-opts.frames_per_chunk // n)


def plan_chunks(num_frames: int, model_left: int, model_right: int, opts: ChunkOptions,
                modulus: int = 1) -> list[_Chunk]:
    """The chunks of an utterance of `num_frames` input frames (`EnsureFrameIsComputed`): output
    rows 0 .. ceil(num_frames / f) - 1 at frames 0, f, 2f, ..., frames_per_chunk / f rows each."""
    f = opts.frame_subsampling_factor
    rows_per_chunk = rounded_frames_per_chunk(opts, modulus) // f
    num_rows = -(-num_frames // f)
    chunks = []
    for row in range(0, num_rows, rows_per_chunk):
        num = min(rows_per_chunk, num_rows - row)
        extra_left = (opts.extra_left_context_initial if row == 0 and opts.extra_left_context_initial >= 0
                      else opts.extra_left_context)
        last = row + num == num_rows
        extra_right = (opts.extra_right_context_final if last and opts.extra_right_context_final >= 0
                       else opts.extra_right_context)
        chunks.append(_Chunk(row * f, num, model_left + extra_left, model_right + extra_right, f))
    return chunks


def online_ivector_row(utt: str, first: int, num: int, num_rows: int, period: int, step: int = 1) -> int:
    """The row of utterance `utt`'s online i-vectors (`num_rows` rows, one per `period` frames)
    that nnet3-compute gives the chunk of `num` output frames first, first + step, ...: that of
    its middle frame, or the last row when the matrix ends at most 50 frames early (DataError if
    further, or if it is empty)."""
    if period <= 0:
        raise ValueError("online i-vectors need --online-ivector-period > 0")
    frame = first + (num - 1) * step // 2  # Kaldi halves last - first, not the number of frames
    row = frame // period
    if row < num_rows:
        return row
    if num_rows == 0 or (row - (num_rows - 1)) * period > IVECTOR_EDGE_FRAMES:
        raise DataError(utt, f"could not get an i-vector for frame {frame}, only available till frame "
                             f"{num_rows} * ivector-period={period} (mismatched --online-ivector-period?)")
    return num_rows - 1


def _edge_padded(feats: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    idx = torch.arange(lo, hi + 1, device=feats.device).clamp(0, feats.shape[0] - 1)
    return feats[idx]


def compute_utterance(module: NnetModule, feats, opts: ChunkOptions, context: tuple[int, int],
                      log_priors: np.ndarray | None = None, ivector: np.ndarray | None = None) -> np.ndarray:
    """Output of node `output` for every frame of `feats` (T, D) (every f-th with frame
    subsampling: ceil(T / f) rows); minus `log_priors` if given; `ivector` as in
    `compute_utterances`."""
    [(_, out)] = compute_utterances(module, [(None, feats, ivector)], opts, context, log_priors)
    return out


@torch.no_grad()
def compute_utterances(module: NnetModule, utterances: Iterable[tuple[Any, Any, np.ndarray | None]],
                       opts: ChunkOptions, context: tuple[int, int], log_priors: np.ndarray | None = None,
                       utterances_per_batch: int = 256) -> Iterator[tuple[Any, np.ndarray]]:
    """(key, output) for each (key, feats, ivectors), in order; output has ceil(T / f) rows (f the
    frame subsampling factor). `log_priors` None or empty: no prior subtraction (a chain model's
    empty priors, as Kaldi's decodables). `ivectors` is None (no `ivector`
    input), the utterance's i-vector (dim,) for every chunk, or its online i-vectors (rows, dim),
    one row per `opts.online_ivector_period` frames, of which each chunk gets `online_ivector_row`.
    The chunks of up to `utterances_per_batch` utterances are computed together, one forward per
    chunk shape: a recurrent network's cost here is per time step, not per chunk."""
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
    # (u, chunk, its i-vector), planned for the whole block first so that a short i-vector
    # matrix fails before any forward
    groups: dict[tuple[int, int, int], list[tuple[int, _Chunk, torch.Tensor | None]]] = {}
    modulus = module.nnet.modulus()
    f = opts.frame_subsampling_factor
    for u, x in enumerate(feats):
        iv = ivectors[u]
        for c in plan_chunks(x.shape[0], context[0], context[1], opts, modulus):
            if iv is not None and iv.ndim == 2:
                chunk_iv = iv[online_ivector_row(block[u][0], c.first, c.num, iv.shape[0], opts.online_ivector_period,
                                                 c.step)]
            else:
                chunk_iv = iv
            groups.setdefault((c.num, c.left, c.right), []).append((u, c, chunk_iv))
    outs: list[torch.Tensor | None] = [None] * len(block)
    for (num, left, right), chunks in groups.items():
        span = chunks[0][1].span
        batch = torch.stack([_edge_padded(feats[u], c.first - left, c.first + span - 1 + right) for u, c, _ in chunks])
        ivs = None if chunks[0][2] is None else torch.stack([iv for _, _, iv in chunks])
        y = module(batch, left_context=left, num_frames=span, ivectors=ivs, output_stride=f)
        for (u, c, _), rows in zip(chunks, y):
            if outs[u] is None:
                outs[u] = torch.empty(-(-feats[u].shape[0] // f), y.shape[-1], dtype=y.dtype, device=device)
            row = c.first // f
            outs[u][row:row + num] = rows
    priors = (None if log_priors is None or np.size(log_priors) == 0
              else np.asarray(log_priors, dtype=np.float32)[None, :])
    return [(key, out.cpu().numpy() if priors is None else out.cpu().numpy() - priors)
            for (key, _, _), out in zip(block, outs)]
