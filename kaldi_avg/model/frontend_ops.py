"""SpecAugment training masks (docs/kaldi-formats.md 4.21): the frequency mask of a
GeneralDropoutComponent with specaugment-max-proportion and the time mask of
SpecAugmentTimeMaskComponent, drawn as Kaldi's GetMemo draws them
(src/nnet3/nnet-general-component.cc). Test mode is the identity (the callers skip these)."""
from __future__ import annotations

import numpy as np
import torch

from ..kaldi.nnet3.components import Component


def _rand_int(lo: int, hi: int) -> int:
    """Uniform on [lo, hi], both ends included (Kaldi's RandInt)."""
    return int(torch.randint(lo, hi + 1, ()))


def freq_mask(x: torch.Tensor, c: Component) -> torch.Tensor:
    """(N, 1, dim) or (N, dim) mask for `x` (N, T, dim) or (N, dim): per sequence, a random run
    of 0..round(block-dim * max-proportion) bins (wrapping around) is zeroed in a block-dim row,
    then specaugment-max-regions - 1 times a random half-circle of the row is flipped to split
    the run; every block of the frame uses the row; no rescaling."""
    bd = c.block_dim
    max_zeroed = int(np.float32(bd) * np.float32(c.spec_augment_max_proportion) + np.float32(0.5))
    rows = torch.ones(x.shape[0], bd)
    for row in rows:
        zeroed = _rand_int(0, max_zeroed)
        if zeroed == 0:
            continue
        start = _rand_int(0, bd - 1)
        row[[(start + i) % bd for i in range(zeroed)]] = 0.0
        half = bd // 2
        for _ in range(1, c.spec_augment_max_regions):
            start = _rand_int(0, bd - 1)
            for i in range(half // 2):
                a, b = (start + i) % bd, (start + half - i) % bd
                row[a], row[b] = row[b].clone(), row[a].clone()
    mask = rows.repeat(1, c.dim // bd).to(dtype=x.dtype, device=x.device)
    return mask[:, None] if x.dim() == 3 else mask


def time_mask(x: torch.Tensor, times: torch.Tensor | None, c: Component) -> torch.Tensor:
    """(N, T, 1) mask for `x` (N, T, dim) whose frames are at `times`: per sequence, in time
    order, kept runs of 1..int(max-frames (1-z)/z) frames alternate with zeroed runs of
    1..time-mask-max-frames, the first run a kept one with probability z (z = zeroed-proportion)."""
    z = np.float32(c.zeroed_proportion)
    max_zeroed = c.time_mask_max_frames
    max_kept = int(np.float32(np.float32(max_zeroed) * (np.float32(1.0) - z)) / z)  # float, as Kaldi
    num_seqs, num_frames = x.shape[0], x.shape[1]
    order = torch.argsort(times.cpu()) if times is not None else torch.arange(num_frames)
    mask = torch.ones(num_seqs, num_frames)
    for n in range(num_seqs):
        t = 0
        while t < num_frames:
            if t > 0 or float(torch.rand(())) < z:   # Kaldi's WithProb(z)
                t += _rand_int(1, max_kept)
            run = _rand_int(1, max_zeroed)
            mask[n, order[t:t + run]] = 0.0
            t += run
    return mask.to(dtype=x.dtype, device=x.device)[..., None]
