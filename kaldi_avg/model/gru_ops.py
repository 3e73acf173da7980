"""The fused GRU cells in PyTorch (docs/kaldi-formats.md 4.20): functions of (rows, W^h) that
`ops.ComponentOp` applies for GruNonlinearityComponent and OutputGruNonlinearityComponent.
Gradients are autograd's; Kaldi's tiny tanh self-repair term is not added."""
from __future__ import annotations

import torch


def gru_nonlinearity(x: torch.Tensor, w_h: torch.Tensor) -> torch.Tensor:
    """[z_t, r_t, hpart_t, c_{t-1}, s_{t-1}] -> [h_t, c_t]; W^h is C x R. Without projection
    (R = C) the input is [z_t, r_t, hpart_t, y_{t-1}] and y_{t-1} serves as both c_{t-1} and
    s_{t-1}: both are read from the end of the row."""
    C, R = w_h.shape
    z_t, r_t, hpart_t = x[..., :C], x[..., C:C + R], x[..., C + R:2 * C + R]
    c_prev, s_prev = x[..., 2 * C + R:3 * C + R], x[..., x.shape[-1] - R:]
    h_t = torch.tanh(hpart_t + torch.nn.functional.linear(r_t * s_prev, w_h))
    return torch.cat([h_t, (1 - z_t) * h_t + z_t * c_prev], dim=-1)


def output_gru_nonlinearity(x: torch.Tensor, w_h: torch.Tensor) -> torch.Tensor:
    """[z_t, hpart_t, c_{t-1}] -> [h_t, c_t] with the C-vector w^h applied elementwise."""
    C = w_h.shape[0]
    z_t, hpart_t, c_prev = x[..., :C], x[..., C:2 * C], x[..., 2 * C:3 * C]
    h_t = torch.tanh(hpart_t + w_h * c_prev)
    return torch.cat([h_t, (1 - z_t) * h_t + z_t * c_prev], dim=-1)


GRU_CELLS = {"GruNonlinearityComponent": gru_nonlinearity,
             "OutputGruNonlinearityComponent": output_gru_nonlinearity}

# What training does differently from nnet3-train for these types; the driver says it at start-up.
TRAINING_DIFFERENCES = {
    t: "W^h is trained with the plain gradient (Kaldi: natural gradient), without the tanh self-repair "
       "term, and its tanh statistics are not accumulated (docs/kaldi-formats.md 4.20)"
    for t in GRU_CELLS}
