"""Rung 2: the bigram neural LM. The next token is predicted from the current token alone: its
embedding, then a linear map to one logit per vocabulary entry. No context at all, so it can at
best learn the bigram counts that the n-gram rung (n = 2) reads off directly."""

from __future__ import annotations

import torch
import torch.nn as nn


class BigramLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        return self.lm_head(self.tok_emb(ids))
