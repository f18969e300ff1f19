"""The position-wise MLP: plain (GPT-2: down(act(up(x)))) or gated (Shazeer 2020, GLU variants:
down(act(gate(x)) * up(x)), SwiGLU when act is SiLU).

The gate and up projections are one fused matrix (one matmul per token instead of two).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from .linear import Linear

ACTIVATION_FUNCTIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "relu": F.relu,
}


class MLP(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.gated = config.gated_mlp
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        n_in = 2 * config.d_ff if self.gated else config.d_ff
        self.up = Linear(config.d_model, n_in, bias=config.bias)  # output features [gate | up] when gated
        self.down = Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)  # (B, T, d_ff) or (B, T, 2*d_ff)
        if self.gated:
            gate, up = h.chunk(2, dim=-1)  # (B, T, d_ff) each
            return self.down(self.act(gate) * up)
        return self.down(self.act(h))
