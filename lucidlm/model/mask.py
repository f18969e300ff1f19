"""Which keys each query may attend to, as one boolean tensor (B, 1, T, S); True = visible.

Three rules combine: causal (a key's position is not after the query's), sliding window (the key
is fewer than `window` positions back) and padding (the key is a real token). The rules use token
positions, not slot indices, so left-padded rows and cached keys need no special case.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import LucidError


class Mask(NamedTuple):
    """Which keys each query sees: an explicit boolean tensor (B, 1, T, S), True = visible, or None
    with is_causal saying whether the plain lower triangle applies (the fused kernel builds it)."""

    visible: torch.Tensor | None
    is_causal: bool = False

    def tensor(self, n_queries: int, n_keys: int, device: torch.device) -> torch.Tensor | None:
        """The boolean tensor, or None when every key is visible."""
        if self.is_causal:
            return causal_mask(n_queries, n_keys, device)
        return self.visible


def padding_of(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """attention_mask (B, T), 1 for real tokens and 0 for padding -> bool (B, T), or None when no
    token is padding (so the fast paths stay open)."""
    if attention_mask is None:
        return None
    if attention_mask.shape != input_ids.shape:
        raise LucidError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                         f"input_ids {tuple(input_ids.shape)}")
    valid = attention_mask.bool()
    return None if bool(valid.all()) else valid


def mask_for(query_positions: torch.Tensor, key_positions: torch.Tensor, key_valid: torch.Tensor | None,
             causal: bool, window: int | None) -> Mask:
    """The cheapest mask that is exact for this step."""
    T, S = query_positions.shape[1], key_positions.shape[1]
    if key_valid is None and (window is None or S <= window):
        if not causal or T == 1:
            return Mask(None)  # bidirectional, or one new token after the cache: every key is visible
        if T == S:
            return Mask(None, is_causal=True)  # a plain forward
    return Mask(attention_mask(query_positions, key_positions, key_valid, causal, window))


def attention_mask(query_positions: torch.Tensor, key_positions: torch.Tensor,
                   key_valid: torch.Tensor | None, causal: bool, window: int | None) -> torch.Tensor:
    """query_positions (B, T), key_positions (B, S), key_valid (B, S) or None -> (B, 1, T, S) bool."""
    distance = query_positions[:, :, None] - key_positions[:, None, :]  # (B, T, S) query - key
    visible = torch.ones_like(distance, dtype=torch.bool)
    if causal:
        visible &= distance >= 0
    if window is not None:
        visible &= (distance < window) if causal else (distance.abs() < window)
    if key_valid is not None:
        visible &= key_valid[:, None, :]
    # subtle: a padding query may see no key at all, and softmax over nothing is NaN. Let it see
    # every key instead; its output is garbage that no real token reads.
    visible |= ~visible.any(dim=-1, keepdim=True)
    return visible[:, None]  # (B, 1, T, S), broadcast over heads


def causal_mask(n_queries: int, n_keys: int, device: torch.device) -> torch.Tensor:
    """(1, 1, T, S) lower-triangular mask for T queries that are the last T of S keys."""
    return torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(n_keys - n_queries)[None, None]
