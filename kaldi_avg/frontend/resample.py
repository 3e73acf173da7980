"""Band-limited sample-rate conversion by a rational factor (windowed-sinc, polyphase).

`np.interp` aliases everything above the new Nyquist frequency back into the band; speech
synthesised at 22050 Hz has energy up to 11 kHz, so going to 8 kHz needs a real low-pass.
Each output sample is a dot product of the input with a Kaiser-windowed sinc centred on the
output instant; with the rates' ratio up/down in lowest terms there are only `up` distinct
filter phases, so the filter bank is computed once and each phase is one matrix-vector
product over a strided view of the input.
"""
from __future__ import annotations

import functools
import math

import numpy as np


@functools.lru_cache(maxsize=8)
def _filter_bank(orig_rate: int, new_rate: int, num_zeros: int, rolloff: float, beta: float):
    """Returns (weights[up, taps], first_offset, up, down): output n uses inputs
    base(n) + first_offset + m, m = 0..taps-1, with base(n) = floor(n * down / up)."""
    g = math.gcd(orig_rate, new_rate)
    up, down = new_rate // g, orig_rate // g
    cutoff = rolloff * 0.5 * min(orig_rate, new_rate)        # Hz, the -6 dB point
    half_width = num_zeros / (2.0 * cutoff)                   # seconds each side of the centre
    reach = int(math.ceil(half_width * orig_rate)) + 1        # input samples each side
    offsets = np.arange(-reach + 1, reach + 1)
    phase = np.arange(up)
    base = (phase * down) // up
    # time (s) from each candidate input sample to the output instant, per phase
    t = (phase[:, None] * down - (base[:, None] + offsets[None, :]) * up) / (orig_rate * up)
    inside = np.abs(t) < half_width
    window = np.where(inside, np.i0(beta * np.sqrt(np.clip(1.0 - (t / half_width) ** 2, 0.0, 1.0))), 0.0)
    weights = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * window / np.i0(beta)
    weights /= weights.sum(axis=1, keepdims=True)             # exact unity gain at DC for every phase
    weights.flags.writeable = False                           # shared through the cache
    return weights, int(offsets[0]), up, down


def resample(signal: np.ndarray, orig_rate: int, new_rate: int, num_zeros: int = 32,
             rolloff: float = 0.92, beta: float = 8.0) -> np.ndarray:
    """Resamples a 1-D signal from `orig_rate` to `new_rate` Hz (integers).

    The low-pass cutoff is `rolloff` times the lower Nyquist frequency; `num_zeros` sinc
    zero crossings each side and a Kaiser window of shape `beta` give about 80 dB stop-band
    attenuation and a transition band of roughly +-300 Hz around the cutoff at 8 kHz.
    Output sample n lies at time n / new_rate; there are ceil(len * new / orig) of them.
    Returns float64.
    """
    x = np.asarray(signal, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"resample: expected a 1-D signal, got shape {x.shape}")
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"resample: rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return x.copy()
    weights, first, up, down = _filter_bank(orig_rate, new_rate, num_zeros, rolloff, beta)
    num_out = -(-x.size * new_rate // orig_rate)
    taps = weights.shape[1]
    padded = np.concatenate([np.zeros(-first), x, np.zeros(taps)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)   # a view, no copy
    out = np.empty(num_out)
    # outputs n = p + up * j share phase p; their windows start at base(p) + down * j
    for p in range(min(up, num_out)):
        count = len(range(p, num_out, up))
        out[p::up] = windows[(p * down) // up::down][:count] @ weights[p]
    return out
