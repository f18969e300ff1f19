"""The training loss: cross-entropy over the positions that have a target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # cross_entropy's ignore_index: a position without a target


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the real targets (padding masked out)."""
    if not bool(mask.all()):
        targets = targets.masked_fill(~mask, IGNORE)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)
