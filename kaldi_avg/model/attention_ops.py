"""RestrictedAttentionComponent's math in PyTorch (Kaldi's src/nnet3/attention.cc
`AttentionForward`; docs/kaldi-formats.md 4.24). Training and test mode compute the same thing;
the derivative is autograd's, which is Kaldi's `AttentionBackward`.

Per head h and output frame t, with window position o = 0 .. C-1 reading frame
t + (o - L) * time-stride, key k_o, value v_o and the query q = [r, s] of frame t (r of key
dim, s of C position terms):
    b_o = key-scale * (r . k_o) + s_o,   c = softmax(b),   u = [sum_o c_o v_o, c (output-context)]
"""
from __future__ import annotations

import torch

from ..kaldi.nnet3.components.attention import RestrictedAttentionComponent


def restricted_attention(x: torch.Tensor, c: RestrictedAttentionComponent) -> torch.Tensor:
    """`x`: (..., C * input-dim), the component's input at the C window frames in order (its
    `input_descriptor`, zeros for optional frames that do not exist) -> (..., output-dim)."""
    K, V = c.key_dim, c.value_dim
    window = x.reshape(*x.shape[:-1], c.context_dim, c.num_heads, c.input_dim_per_head())
    keys, values = window[..., :K], window[..., K:K + V]                 # (..., C, H, K|V)
    query = window[..., c.num_left_inputs, :, K + V:]                    # frame t: (..., H, K + C)
    scores = c.key_scale * torch.einsum("...hk,...ohk->...ho", query[..., :K], keys) + query[..., K:]
    weights = torch.softmax(scores, dim=-1)                              # (..., H, C)
    out = torch.einsum("...ho,...ohv->...hv", weights, values)
    if c.output_context:
        out = torch.cat([out, weights], dim=-1)
    return out.reshape(*x.shape[:-1], c.output_dim())
