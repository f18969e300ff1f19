"""Multi-head attention with grouped key/value heads (MHA, GQA and MQA are one code path).

Two paths behind one switch (`fused`): the readable softmax(QK^T / sqrt(D) + mask) V, and torch's
fused scaled_dot_product_attention, which is faster and never materialises the (T, S) weights. A
test proves they agree. A probe (model/probe.py) adds a recorder to the layers it watches; they
hand it their queries and keys, and it recomputes the weights with `attention_weights`, the plain
path's own first half, while the layer's output still comes from the fused kernel.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from .context import ForwardContext
from .linear import Linear
from .mask import Mask
from .norm import make_norm
from .position import apply_rotary

# recorder(attention, q (B, H, T, D), k (B, Hkv, S, D), v (B, Hkv, S, D), mask, position_bias)
Recorder = Callable[["Attention", torch.Tensor, torch.Tensor, torch.Tensor, Mask, "torch.Tensor | None"], None]


class Attention(nn.Module):
    """Self-attention: queries, keys and values all come from x."""

    def __init__(self, config: Config, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.scale = config.attention_scale if config.attention_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.softcap = config.attn_logit_softcap
        self.dropout = config.attention_dropout
        self.window = config.sliding_window if config.uses_sliding_window(layer_index) else None
        self.make_projections(config)
        # QK-norm: each head's queries and keys normed over their D channels before rotation.
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.out = Linear(self.n_heads * self.head_dim, config.d_model, bias=config.bias)
        self.fused = True  # False: the plain path everywhere (slower, same numbers)
        self.recorders: list[Recorder] = []  # one per probe watching this layer

    def make_projections(self, config: Config) -> None:
        # One matmul for queries, keys and values: output rows [q (H*D) | k (Hkv*D) | v (Hkv*D)].
        self.qkv = Linear(config.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim,
                          bias=config.qkv_bias)

    def forward(self, x: torch.Tensor, context: ForwardContext) -> torch.Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        # split, not slicing: its backward is one concatenation, where each slice's backward
        # would fill a zero tensor of the whole width and add into it.
        qk, v = self.qkv(x).view(B, T, H + 2 * Hkv, D).split([H + Hkv, Hkv], dim=2)
        if self.q_norm is not None:
            q, k = qk.split([H, Hkv], dim=2)  # (B, T, H, D), (B, T, Hkv, D)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        rope = context.rotary(self.window is not None)
        if rope is not None:
            qk = apply_rotary(qk, *rope)  # queries and keys are adjacent heads: one rotation covers both
        q, k = qk.split([H, Hkv], dim=2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, D)
        if context.cache is not None:
            k, v = context.cache.update(self.layer_index, k, v)  # (B, Hkv, S, D): past and new keys
        if context.shared_prefix is not None:
            return self.attend_shared(q, k, v, context)
        return self.attend(q, k, v, context.mask(self.window), context.position_bias)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask,
               position_bias: torch.Tensor | None) -> torch.Tensor:
        """q (B, H, T, D), k and v (B, Hkv, S, D) -> the output projection of their attention (B, T, C)."""
        B, H, T, D = q.shape
        for record in self.recorders:
            record(self, q, k, v, mask, position_bias)
        y = self.heads_output(q, k, v, mask, position_bias)
        return self.out(y.transpose(1, 2).reshape(B, T, H * D))  # (B, H, T, D) -> (B, T, C)

    def attend_shared(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, context: ForwardContext) -> torch.Tensor:
        """Attention over a batch packed around its shared prefix (shared_prefix.py): q, k, v
        (1, heads, L, D) -> the output projection (1, L, C). The prefix attends to itself; each
        row's rest attends to the prefix's keys and to its own."""
        shared = context.shared_prefix
        (q_prefix, q_rest), (k_prefix, k_rest), (v_prefix, v_rest) = (shared.split_heads(t) for t in (q, k, v))
        prefix_mask, rest_mask = context.shared_masks(self.window)
        prefix = self.heads_output(q_prefix, k_prefix, v_prefix, prefix_mask, None)  # (1, H, P, D)
        rows = shared.rows
        keys = torch.cat((k_prefix.expand(rows, -1, -1, -1), k_rest), dim=2)  # (B, Hkv, T, D)
        values = torch.cat((v_prefix.expand(rows, -1, -1, -1), v_rest), dim=2)
        rest = self.heads_output(q_rest, keys, values, rest_mask, None)  # (B, H, T - P, D)
        y = shared.join_heads(prefix, rest)  # (1, L, H, D)
        return self.out(y.flatten(2))

    def heads_output(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask,
                     position_bias: torch.Tensor | None) -> torch.Tensor:
        """Each head's attention output (B, H, T, D), by the fused kernel or the plain path."""
        dropout = self.dropout if self.training else 0.0
        # The fused kernel cannot soft-cap the logits (tanh between the product and the softmax),
        # so a capped model takes the plain path.
        if self.fused and self.softcap is None and not self._plain_is_faster(q, k):
            return self._fused(q, k, v, mask, position_bias, dropout)
        return plain_attention(q, k, v, mask, position_bias, self.scale, dropout, self.softcap)[0]

    def weights(self, q: torch.Tensor, k: torch.Tensor, mask: Mask,
                position_bias: torch.Tensor | None) -> torch.Tensor:
        """The attention weights (B, H, T, S) these queries give these keys (what a probe records)."""
        return attention_weights(q, k, mask, position_bias, self.scale, self.softcap)

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
        if position_bias is None and mask.visible is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=mask.is_causal, dropout_p=dropout,
                                                  scale=self.scale, enable_gqa=gqa)
        bias = additive_bias(mask, position_bias, q.shape[2], k.shape[2], q)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=self.scale,
                                              enable_gqa=gqa)


class CrossAttention(Attention):
    """An encoder-decoder's cross-attention (Vaswani et al. 2017, section 3.2.3): queries from the
    decoder, keys and values from the encoded source, which every query may see whole (real tokens
    only). The source's keys and values are computed once per source and kept on the cache."""

    def __init__(self, config: Config, layer_index: int) -> None:
        super().__init__(config, layer_index)
        self.window = None
        self.q_norm = self.k_norm = None  # QK-norm is a self-attention mechanism here; no family norms the source's keys

    def make_projections(self, config: Config) -> None:
        # Queries from the decoder; keys and values, in one matmul, from the source: rows [k | v].
        self.q = Linear(config.d_model, self.n_heads * self.head_dim, bias=config.qkv_bias)
        self.kv = Linear(config.d_model, 2 * self.n_kv_heads * self.head_dim, bias=config.qkv_bias)

    def forward(self, x: torch.Tensor, context: ForwardContext) -> torch.Tensor:
        B, T, _ = x.shape
        source = context.encoder_output
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        if context.cache is not None:
            k, v = context.cache.cross_keys_values(self.layer_index, lambda: self.keys_values(source.states))
        else:
            k, v = self.keys_values(source.states)
        return self.attend(q, k, v, source.mask, None)

    def keys_values(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The source's hidden states (B, S, C) -> keys and values, each (B, Hkv, S, D)."""
        B, S, _ = states.shape
        k, v = self.kv(states).view(B, S, 2 * self.n_kv_heads, self.head_dim).transpose(1, 2).chunk(2, dim=1)
        return k, v


def additive_bias(mask: Mask | None, position_bias: torch.Tensor | None, n_queries: int, n_keys: int,
                  like: torch.Tensor) -> torch.Tensor | None:
    """What to add to the attention logits: 0 where visible, -inf where hidden, plus the relative
    position bias; None when there is nothing to add."""
    visible = mask.tensor(n_queries, n_keys, like.device) if mask is not None else None
    bias = None
    if visible is not None:
        bias = torch.zeros(visible.shape, dtype=like.dtype, device=like.device).masked_fill_(~visible, float("-inf"))
    if position_bias is not None:
        bias = position_bias.to(like.dtype) if bias is None else bias + position_bias.to(like.dtype)
    return bias


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: Mask | None, position_bias: torch.Tensor | None,
                      scale: float, softcap: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask): q (B, H, T, D), k (B, Hkv, S, D) -> weights (B, H, T, S).
    softcap: the scaled logits become softcap * tanh(logits / softcap) first (Gemma 2)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # each key/value head serves `groups` query heads
        k = k.repeat_interleave(groups, dim=1)  # (B, H, S, D)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    bias = additive_bias(mask, position_bias, q.shape[2], k.shape[2], scores)
    if bias is not None:
        # Adding -inf rather than masked_fill: the same scores, and the backward of an addition
        # is free (softmax already gives hidden keys zero gradient).
        scores = scores + bias
    return scores.softmax(dim=-1)


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask | None,
                    position_bias: torch.Tensor | None, scale: float, dropout: float = 0.0,
                    softcap: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias + mask) v: q (B, H, T, D), k and v (B, Hkv, S, D).

    Returns the output (B, H, T, D) and the attention weights (B, H, T, S)."""
    weights = attention_weights(q, k, mask, position_bias, scale, softcap)
    groups = q.shape[1] // v.shape[1]
    if groups > 1:
        v = v.repeat_interleave(groups, dim=1)  # (B, H, S, D)
    return (F.dropout(weights, p=dropout) @ v if dropout > 0 else weights @ v), weights
