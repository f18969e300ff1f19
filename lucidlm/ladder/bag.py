"""Rungs 3 and 4: the bag of context. Each position predicts the next token from the uniform
average of the embeddings of every token so far (itself included): the context counts, its
order does not, and the current token weighs as much as one from 60 characters back.

With positions=True, a learned embedding per position is added to each token's before averaging.
An average of positions is still an average: it tells how long the context is, not what stands
where, which is why attention (a weighted average) comes next.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class BagOfContextLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, context_length: int, positions: bool = False) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(context_length, d_model) if positions else None
        self.lm_head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        T = ids.shape[1]
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=ids.device))
        # Row t of `average` holds 1/(t+1) over columns 0..t: a causal, uniform weighting.
        average = torch.tril(torch.ones(T, T, device=ids.device))
        average = average / average.sum(dim=1, keepdim=True)  # (T, T)
        return self.lm_head(average @ x)  # (T, T) @ (B, T, C) -> (B, T, C)
