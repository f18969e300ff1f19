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
        # split, not slicing: its backward is one concatenation, where each slice's backward
        # would fill a zero tensor of the whole width and add into it.
        qk, v = self.qkv(x).view(B, T, H + 2 * Hkv, D).split([H + Hkv, Hkv], dim=2)
        if self.rotary:
            qk = apply_rotary(qk, *rope)  # queries and keys are adjacent heads: one rotation covers both
        q, k = qk.split([H, Hkv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if cache is not None:
            k, v = cache.update(self.layer_index, k, v)  # (B, Hkv, S, D): past and new keys

        dropout = self.dropout if self.training else 0.0
        if self.fused and not keep_weights and not self._plain_is_faster(q, k):
            y, weights = self._fused(q, k, v, mask, position_bias, dropout), None
        else:
            y, weights = plain_attention(q, k, v, mask, position_bias, self.scale, dropout)
            weights = weights if keep_weights else None
        y = y.transpose(1, 2).reshape(B, T, H * D)  # (B, H, T, D) -> (B, T, C)
        return self.out(y), weights

    @staticmethod
    def _plain_is_faster(q: torch.Tensor, k: torch.Tensor) -> bool:
        """subtle: training under CPU bfloat16 autocast, torch 2.13's fused kernel is the slow
        choice. Its bfloat16 backward is about 4x slower than its float32 one, and float32 (with
        the casts) is still 1.4-2.3x slower than the plain path in bfloat16 up to 512 keys;
        beyond that the plain path's (T, S) weights cost more than they save (measured, 2 threads,
        forward + backward). The plain path computes the same function."""
        return (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad
                and torch.is_autocast_enabled("cpu") and k.shape[2] <= 512)

    def _fused(self, q, k, v, mask: Mask, position_bias, dropout: float) -> torch.Tensor:
        if (q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad
                and torch.is_autocast_enabled("cpu")):
            # subtle: under CPU autocast, the fused kernel's bfloat16 backward is about 4x slower
            # than its float32 one (measured, torch 2.13), so attention that will be trained
            # through (beyond _plain_is_faster's range) runs in float32. Its bfloat16 forward is
            # not slow (0.69-1.04x the float32 time with casts, measured), so evaluation stays in bfloat16.
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
    hidden = to_additive(materialize(mask, q.shape[2], k.shape[2], q.device), scores.dtype)
    if hidden is not None:
        # Adding -inf rather than masked_fill: the same scores, and the backward of an addition
        # is free (softmax already gives hidden keys zero gradient).
        scores = scores + hidden
    weights = scores.softmax(dim=-1)
    y = F.dropout(weights, p=dropout) @ v if dropout > 0 else weights @ v
    return y, weights
