"""Which keys each query may attend to, as one boolean tensor (B, 1, T, S); True = visible.

Three rules combine: causal (a key's position is not after the query's), sliding window (the key
is fewer than `window` positions back) and padding (the key is a real token). The rules use token
positions, not slot indices, so left-padded rows and cached keys need no special case.
"""

from __future__ import annotations

import torch


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
