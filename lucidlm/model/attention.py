"""Multi-head attention with grouped key/value heads (MHA, GQA and MQA are one code path).

Two paths behind one switch (`fused`): the readable softmax(QK^T / sqrt(D) + mask) V, which keeps
the attention weights for inspection, and torch's fused scaled_dot_product_attention, which is
faster and never materialises the (T, S) weights. A test proves they agree.
"""

from __future__ import annotations

import math
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from .linear import Linear
from .mask import causal_mask
from .position import apply_rotary

# A mask is a boolean tensor (B, 1, T, S), or a cheap description of one: "causal" (T == S, lower
# triangle) or None (every key visible).
Mask = Union[torch.Tensor, str, None]


class Attention(nn.Module):
    def __init__(self, config: Config, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout
        self.rotary = config.position == "rope"
        # One matmul for queries, keys and values: output columns [q (H*D) | k (Hkv*D) | v (Hkv*D)].
        self.qkv = Linear(config.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim,
                             bias=config.qkv_bias)
        self.out = Linear(self.n_heads * self.head_dim, config.d_model, bias=config.bias)
        self.fused = True  # False: the plain path everywhere (slower, same numbers)

    def forward(self, x: torch.Tensor, mask: Mask, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
                position_bias: torch.Tensor | None = None, cache=None,
                keep_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.qkv(x).view(B, T, H + 2 * Hkv, D)
        if self.rotary:
            # Queries and keys are adjacent heads, so one rotation covers both.
            qk = apply_rotary(qkv[:, :, : H + Hkv], *rope)  # (B, T, H+Hkv, D)
        else:
            qk = qkv[:, :, : H + Hkv]
        q = qk[:, :, :H].transpose(1, 2)  # (B, H, T, D)
        k = qk[:, :, H:].transpose(1, 2)  # (B, Hkv, T, D)
        v = qkv[:, :, H + Hkv:].transpose(1, 2)  # (B, Hkv, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, Hkv, S, D): past and new keys

        dropout = self.dropout if self.training else 0.0
        if self.fused and not keep_weights:
            y, weights = self._fused(q, k, v, mask, position_bias, dropout), None
        else:
            y, weights = plain_attention(q, k, v, mask, position_bias, self.scale, dropout)
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, C)
        return self.out(y), weights

    def _fused(self, q, k, v, mask: Mask, position_bias, dropout: float) -> torch.Tensor:
        if q.device.type == "cpu" and q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu"):
            # subtle: under CPU autocast, the fused kernel's bfloat16 backward is about 4x slower
            # than its float32 one (measured, torch 2.13), so attention itself runs in float32.
            with torch.autocast("cpu", enabled=False):
                return self._fused(q.float(), k.float(), v.float(), mask, position_bias, dropout).to(q.dtype)
        gqa = self.n_kv_heads != self.n_heads
        if position_bias is None and (mask is None or isinstance(mask, str)):
            return F.scaled_dot_product_attention(q, k, v, is_causal=mask == "causal", dropout_p=dropout,
                                                  scale=self.scale, enable_gqa=gqa)
        bias = to_additive(materialize(mask, q.shape[2], k.shape[2], q.device), q.dtype)
        if position_bias is not None:
            bias = position_bias.to(q.dtype) if bias is None else bias + position_bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale,
                                              enable_gqa=gqa)


def materialize(mask: Mask, n_queries: int, n_keys: int, device: torch.device) -> torch.Tensor | None:
    """Turn a mask description into a boolean tensor (or None for "everything visible")."""
    if isinstance(mask, str):
        return causal_mask(n_queries, n_keys, device)
    return mask


def to_additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Boolean mask -> 0 where visible, -inf where hidden, to add to attention logits."""
    if mask is None:
        return None
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask,
                    position_bias: torch.Tensor | None, scale: float,
                    dropout: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias + mask) v. q (B, H, T, D), k and v (B, Hkv, S, D).

    Returns the output (B, H, T, D) and the attention weights (B, H, T, S).
    """
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # each key/value head serves `groups` query heads
        k = k.repeat_interleave(groups, dim=1)  # (B, H, S, D)
        v = v.repeat_interleave(groups, dim=1)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if position_bias is not None:
        scores = scores + position_bias
    visible = materialize(mask, q.shape[2], k.shape[2], q.device)
    if visible is not None:
        scores = scores.masked_fill(~visible, float("-inf"))
    weights = scores.softmax(dim=-1)
    y = F.dropout(weights, p=dropout) @ v if dropout > 0 else weights @ v
    return y, weights
