"""Rungs 5 and 6: attention. The uniform average becomes a weighted one, with weights the model
learns to compute: each position's query meets every earlier position's key, the scores are
scaled by sqrt(d_k), the future is masked with -inf, and the softmax of a row weighs the values
(Vaswani et al. 2017). One head uses the whole width; several heads split it, each free to look
at something else. Both end in an output projection (which, with several heads, mixes them), so
one head and four have the same number of weights.

This is attention and nothing else: no feed-forward layer, no norm, no residual (the block adds
those), so the table shows what attention alone buys.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.query = nn.Linear(d_model, d_model, bias=False)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        q, k, v = (proj(x).view(B, T, H, D).transpose(1, 2) for proj in (self.query, self.key, self.value))
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=1)
        weights = torch.softmax(scores.masked_fill(future, -math.inf), dim=-1)
        context = (weights @ v).transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, C)
        return self.out(context)


class AttentionLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, context_length: int, n_heads: int = 1) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model)
        self.attention = CausalSelfAttention(d_model, n_heads)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1], device=ids.device))
        return self.lm_head(self.attention(x))
