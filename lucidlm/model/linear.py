"""Linear maps and the token embedding, with matrices stored (in_features, out_features).

Why not nn.Linear's (out, in)? Decoding one token is a vector-matrix product that streams every
weight from memory once, and CPU BLAS streams an (in, out) matrix about twice as fast as an
(out, in) one (measured: 17-20 GB/s against 10 GB/s on 2 cores). GPT-2's Conv1D uses the same
layout. The token embedding is stored (d_model, vocab) for the same reason: when the LM head is
tied to it, logits are x @ W; looking a token up reads one column.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x @ W + b, W of shape (in_features, out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.linear wants (out, in); the transposed view costs nothing and keeps the fast layout.
        return F.linear(x, self.weight.t(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[0]}, out_features={self.weight.shape[1]}, bias={self.bias is not None}"


class TokenEmbedding(nn.Module):
    """One column per token: weight (d_model, vocab)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim, vocab_size))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        columns = self.weight.index_select(1, ids.reshape(-1))  # (C, B*T)
        # subtle: contiguous() matters. Elementwise ops keep their input's memory layout, so a
        # transposed view here would make the whole residual stream column-major and every norm
        # and matmul downstream copy it first (measured: 8% of a training step).
        return columns.t().contiguous().view(*ids.shape, self.weight.shape[0])  # (B, T, C)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Use the embedding as the LM head (tied weights): x (B, T, C) -> (B, T, V)."""
        return F.linear(x, self.weight.t())
