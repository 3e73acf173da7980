"""TimeHeightConvolutionComponent and SumBlockComponent in torch (docs/kaldi-formats.md 4.23).

The graph executor hands the convolution its input already spliced over the component's time
offsets (`TimeHeightConvolutionComponent.input_descriptor`), so one output frame is one
convolution of a (num-filters-in, #time-offsets, height-in) image with a kernel spanning all of
its time axis: `conv2d` with the model's (time, height) offsets scattered into a dense kernel
(zeros where the model has no offset), height padding done explicitly so the output rows start
at the model's lowest height offset.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kaldi.nnet3.components import SumBlockComponent, TimeHeightConvolutionComponent


class ConvolutionGeometry:
    """What `time_height_convolution` needs from a component, computed once."""

    def __init__(self, c: TimeHeightConvolutionComponent):
        times = c.time_offsets
        heights = [h for _, h in c.offsets]
        self.f_in, self.f_out = c.num_filters_in, c.num_filters_out
        self.h_in, self.h_out, self.stride = c.height_in, c.height_out, c.height_subsample_out
        self.num_times = len(times)
        self.h_min, self.kernel_height = min(heights), max(heights) - min(heights) + 1
        # column block i of the parameters -> its cell of the (time, height) kernel, flattened
        self.kernel_cells = torch.tensor([times.index(t) * self.kernel_height + h - self.h_min
                                          for t, h in c.offsets])
        top = (self.h_out - 1) * self.stride + max(heights)   # highest input row read
        self.pad = (max(0, -self.h_min), max(0, top - (self.h_in - 1)))

    def kernel(self, linear_params: torch.Tensor) -> torch.Tensor:
        """(f_out, f_in * #offsets) -> (f_out, f_in, #time-offsets, kernel height)."""
        blocks = linear_params.reshape(self.f_out, -1, self.f_in)
        if self.kernel_cells.device != linear_params.device:   # moved once, with the model
            self.kernel_cells = self.kernel_cells.to(linear_params.device)
        dense = blocks.new_zeros(self.f_out, self.num_times * self.kernel_height, self.f_in)
        dense = dense.index_copy(1, self.kernel_cells, blocks)
        return dense.reshape(self.f_out, self.num_times, self.kernel_height, self.f_in).permute(0, 3, 1, 2)


def time_height_convolution(x: torch.Tensor, linear_params: torch.Tensor, bias_params: torch.Tensor,
                            g: ConvolutionGeometry) -> torch.Tensor:
    """x: (..., #time-offsets * height-in * num-filters-in), time-offset-major, filter fastest
    -> (..., height-out * num-filters-out), filter fastest."""
    rows = x.shape[:-1]
    image = x.reshape(-1, g.num_times, g.h_in, g.f_in).permute(0, 3, 1, 2)   # (B, f_in, times, h_in)
    image = F.pad(image, g.pad)
    start = g.h_min + g.pad[0]            # padded row of input height h_min for output row 0
    image = image[..., start:start + (g.h_out - 1) * g.stride + g.kernel_height]
    y = F.conv2d(image, g.kernel(linear_params), bias_params, stride=(1, g.stride))   # (B, f_out, 1, h_out)
    return y[:, :, 0, :].permute(0, 2, 1).reshape(*rows, g.h_out * g.f_out)


def sum_blocks(x: torch.Tensor, c: SumBlockComponent) -> torch.Tensor:
    """Kaldi's AddMatBlocks: scale * the sum of the input's consecutive output-dim blocks."""
    return x.reshape(*x.shape[:-1], -1, c.output_dim()).sum(-2) * c.scale
