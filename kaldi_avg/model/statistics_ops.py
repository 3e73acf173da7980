"""StatisticsExtractionComponent and StatisticsPoolingComponent in PyTorch (docs/kaldi-formats.md
4.25; Kaldi's src/nnet3/nnet-general-component.cc `Propagate`, `Backprop`).

Each gets its input on the frames `times` where it exists (graph.py gives a component that
summarizes other frames the frames it reads, `Component.input_frames`, that exist) and computes
the frames `out_times`. Neither has parameters or randomness: training and test mode agree.
"""
from __future__ import annotations

import torch

from ..kaldi.nnet3.components import StatisticsExtractionComponent, StatisticsPoolingComponent


def _multiples(x: torch.Tensor, times: torch.Tensor, period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The frames at multiples of `period`, the only ones the components read."""
    keep = times % period == 0
    return x[:, keep], times[keep]


def statistics_extraction(x: torch.Tensor, times: torch.Tensor, out_times: torch.Tensor | None,
                          c: StatisticsExtractionComponent) -> torch.Tensor:
    """(N, T_in, D) -> (N, T_out, 1 + D [+ D]): per output frame, the count, sum x (and sum x^2)
    of the input frames in its block of output-period frames. The derivative is Kaldi's: the
    count's is dropped (it is a constant here)."""
    out_times = times if out_times is None else out_times
    x, times = _multiples(x, times, c.input_period)
    stats = torch.cat([torch.ones_like(x[..., :1]), x] + ([x * x] if c.include_variance else []), dim=-1)
    first = out_times[0] // c.output_period
    num_blocks = int(out_times[-1] // c.output_period - first) + 1
    sums = stats.new_zeros(stats.shape[0], num_blocks, stats.shape[-1])
    sums = sums.index_add(1, times // c.output_period - first, stats)
    return sums[:, out_times // c.output_period - first]


def statistics_pooling(x: torch.Tensor, times: torch.Tensor, out_times: torch.Tensor | None,
                       c: StatisticsPoolingComponent) -> torch.Tensor:
    """(N, T_in, 1 + F) extraction stats -> (N, T_out, num-log-count-features + F): the stats
    summed over each output's window (that of the multiple of input-period at or below it),
    divided by their count. Kaldi's Backprop treats the count as a constant and ignores the
    variance floor (the derivative of the stddev is taken at the floored value)."""
    out_times = times if out_times is None else out_times
    x, times = _multiples(x, times, c.input_period)
    centre = (out_times // c.input_period * c.input_period)[:, None]
    window = (times >= centre - c.left_context) & (times <= centre + c.right_context)
    sums = torch.einsum("ok,nkd->nod", window.to(x.dtype), x)
    count = sums[..., :1].detach()
    means = sums[..., 1:] / count
    parts = [torch.log(count).expand(-1, -1, c.num_log_count_features)] if c.num_log_count_features else []
    if not c.output_stddevs:
        return torch.cat(parts + [means], dim=-1)
    dim = (c.in_dim - 1) // 2
    mean, mean_square = means[..., :dim], means[..., dim:]
    variance = mean_square - mean * mean
    variance = variance + (c.variance_floor - variance).clamp(min=0.0).detach()
    return torch.cat(parts + [mean, variance.sqrt()], dim=-1)

