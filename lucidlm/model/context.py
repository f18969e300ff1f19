"""ForwardContext: what one forward pass shares with every layer, built once per pass.

Positions, the masks (one per sliding window size, built on first use), the rotary angles, the
relative position bias, the KV cache and (in an encoder-decoder) the encoded source travel together, so a block's signature stays (x, context)
whatever the model's mechanisms are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from .kv_cache import KVCache
from .mask import Mask, mask_for
from .shared_prefix import SharedPrefix


class EncoderOutput(NamedTuple):
    """An encoder-decoder's encoded source: what its cross-attention reads as keys and values."""

    states: torch.Tensor  # (B, S, C) the encoder's hidden states
    valid: torch.Tensor | None  # (B, S) True for real source tokens; None when none is padding

    @property
    def mask(self) -> Mask:
        """Every query may see every real source token (B, 1, 1, S), or all of them."""
        return Mask(None) if self.valid is None else Mask(self.valid[:, None, None, :])

    def select(self, index: torch.Tensor) -> "EncoderOutput":
        """These batch rows, in this order (beams, rows that leave a batch)."""
        return EncoderOutput(self.states.index_select(0, index),
                             None if self.valid is None else self.valid.index_select(0, index))


@dataclass
class ForwardContext:
    positions: torch.Tensor  # (B, T) positions of the new tokens (queries)
    key_positions: torch.Tensor  # (B, S) positions of every key: cached and new
    key_valid: torch.Tensor | None  # (B, S) True for real tokens; None when no key is padding
    causal: bool
    rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos, sin (B, T, 1, R)
    local_rope: tuple[torch.Tensor, torch.Tensor] | None = None  # the same for sliding-window layers, if they differ
    position_bias: torch.Tensor | None = None  # (B, H, T, S) relative position logits
    cache: KVCache | None = None
    encoder_output: EncoderOutput | None = None  # the source, for cross-attention
    shared_prefix: SharedPrefix | None = None  # the batch packed around its common prefix (shared_prefix.py)
    _masks: dict[int | None, Mask] = field(default_factory=dict)
    _shared_masks: dict[int | None, tuple[Mask, Mask]] = field(default_factory=dict)

    def rotary(self, sliding: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos, sin for a layer: sliding-window layers may rotate with a base of their own (Gemma 3)."""
        return self.local_rope if sliding and self.local_rope is not None else self.rope

    def mask(self, window: int | None) -> Mask:
        """The mask for layers with this sliding window (None: global attention)."""
        if window not in self._masks:
            self._masks[window] = mask_for(self.positions, self.key_positions, self.key_valid, self.causal, window)
        return self._masks[window]

    def shared_masks(self, window: int | None) -> tuple[Mask, Mask]:
        """With a shared prefix, for layers with this window: what the prefix's tokens may see of
        the prefix, and what each row's tokens after it (positions P..T-1) may see of that row's
        keys (0..T-1), the same for every row."""
        if window not in self._shared_masks:
            shared = self.shared_prefix
            keys = torch.arange(shared.row_length, device=self.positions.device)[None]
            prefix = keys[:, :shared.length]
            self._shared_masks[window] = (mask_for(prefix, prefix, None, self.causal, window),
                                          mask_for(keys[:, shared.length:], keys, None, self.causal, window))
        return self._shared_masks[window]
