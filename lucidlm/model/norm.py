"""Normalisation layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019).

RMSNorm rescales by the root mean square only: y = x / sqrt(mean(x^2) + eps) * weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused kernel; the plain formula is in the module docstring.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def make_norm(config: Config, dim: int | None = None) -> nn.Module:
    """The config's norm over dim channels (default d_model; a head's head_dim for QK-norm)."""
    dim = dim or config.d_model
    if config.norm == "rmsnorm":
        return RMSNorm(dim, config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.norm_bias)
