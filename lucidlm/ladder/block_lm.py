"""Rung 7: one transformer block. Attention (several heads) and a feed-forward layer (4x wide,
GELU), each read from a layer-normed copy of the stream and added back to it (pre-norm residuals,
as GPT-2 does), then a final norm and the LM head. The baby GPT stacks four of these."""

from __future__ import annotations

import torch
import torch.nn as nn

from .attention_lm import CausalSelfAttention


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, n_heads)
        self.norm2 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        x = x + self.attention(self.norm1(x))  # tokens exchange information
        return x + self.feed_forward(self.norm2(x))  # each token thinks on its own


class BlockLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, context_length: int, n_heads: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model)
        self.block = Block(d_model, n_heads)
        self.final_norm = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1], device=ids.device))
        return self.lm_head(self.final_norm(self.block(x)))
