"""ForwardContext: what one forward pass shares with every layer, built once per pass.

Positions, the masks (one per sliding window size, built on first use), the rotary angles, the
relative position bias and the KV cache travel together, so a block's signature stays (x, context)
whatever the model's mechanisms are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .kv_cache import KVCache
from .mask import Mask, mask_for


@dataclass
class ForwardContext:
    positions: torch.Tensor  # (B, T) positions of the new tokens (queries)
    key_positions: torch.Tensor  # (B, S) positions of every key: cached and new
    key_valid: torch.Tensor | None  # (B, S) True for real tokens; None when no key is padding
    causal: bool
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin (B, T, 1, D)
    position_bias: torch.Tensor | None = None  # (B, H, T, S) relative position logits
    cache: KVCache | None = None
    _masks: dict[int | None, Mask] = field(default_factory=dict)

    def mask(self, window: int | None) -> Mask:
        """The mask for layers with this sliding window (None: global attention)."""
        if window not in self._masks:
            self._masks[window] = mask_for(self.positions, self.key_positions, self.key_valid, self.causal, window)
        return self._masks[window]
