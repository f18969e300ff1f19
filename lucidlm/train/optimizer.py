"""AdamW with weight decay on matrices only: embeddings and linear weights decay; biases and norm
gains do not (decaying a gain towards zero only fights the normalisation)."""

from __future__ import annotations

import torch


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float,
                   betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # The fused kernel is one call per step instead of several per tensor (CUDA and CPU).
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=device.type in ("cuda", "cpu"))
