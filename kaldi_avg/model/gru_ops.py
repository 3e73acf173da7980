"""The fused GRU cells in PyTorch (docs/kaldi-formats.md 4.20): functions of (rows, W^h) that
`ops.ComponentOp` applies for GruNonlinearityComponent and OutputGruNonlinearityComponent.
Gradients are autograd's; `record(u, a, h_t)`, when given, receives W^h's input u, its product
a (whose derivative is the tanh argument's) and h_t, what Kaldi's consolidated update of W^h
(natural gradient, tanh statistics) works from. Kaldi's tiny tanh self-repair term is not added."""
from __future__ import annotations

from collections.abc import Callable

import torch

Record = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]


def gru_nonlinearity(x: torch.Tensor, w_h: torch.Tensor, record: Record | None = None) -> torch.Tensor:
    """[z_t, r_t, hpart_t, c_{t-1}, s_{t-1}] -> [h_t, c_t]; W^h is C x R. Without projection
    (R = C) the input is [z_t, r_t, hpart_t, y_{t-1}] and y_{t-1} serves as both c_{t-1} and
    s_{t-1}: both are read from the end of the row."""
    C, R = w_h.shape
    z_t, r_t, hpart_t = x[..., :C], x[..., C:C + R], x[..., C + R:2 * C + R]
    c_prev, s_prev = x[..., 2 * C + R:3 * C + R], x[..., x.shape[-1] - R:]
    u = r_t * s_prev
    a = torch.nn.functional.linear(u, w_h)
    h_t = torch.tanh(hpart_t + a)
    if record is not None:
        record(u, a, h_t)
    return torch.cat([h_t, (1 - z_t) * h_t + z_t * c_prev], dim=-1)


def output_gru_nonlinearity(x: torch.Tensor, w_h: torch.Tensor, record: Record | None = None) -> torch.Tensor:
    """[z_t, hpart_t, c_{t-1}] -> [h_t, c_t] with the C-vector w^h applied elementwise."""
    C = w_h.shape[0]
    z_t, hpart_t, c_prev = x[..., :C], x[..., C:2 * C], x[..., 2 * C:3 * C]
    a = w_h * c_prev
    h_t = torch.tanh(hpart_t + a)
    if record is not None:
        record(c_prev, a, h_t)
    return torch.cat([h_t, (1 - z_t) * h_t + z_t * c_prev], dim=-1)

