"""The course's worked attention examples, as functions that return every intermediate.

They follow chapter 3 of Raschka's "Build a Large Language Model (From Scratch)" step by step and
with the same random weights (the same seeds, and the weights made in the same order), so the
printed tables match the book's to its 4 decimals: first attention without weights (S = X X^T),
then learned queries, keys and values scaled by sqrt(d_k), the causal mask, and several heads.
`attention_from_qk` does the same from query and key tables written by hand, as slides do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..errors import LucidError

JOURNEY_WORDS = ["Your", "journey", "starts", "with", "one", "step"]
# The book's 3-dimensional embeddings of "Your journey starts with one step".
JOURNEY = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                        [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])


@dataclass
class AttentionSteps:
    """Every intermediate of one attention computation over T tokens (one head, or the heads side
    by side). scores: (T, T) dot products q_i . k_j; weights: softmax of the scaled, masked scores
    over each row; context: (T, D) weights @ values."""

    queries: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    scale: float  # the scores are divided by this before the softmax (1: not scaled)
    masked: torch.Tensor  # the scores with -inf where a query may not look (the future, when causal)
    weights: torch.Tensor
    context: torch.Tensor
    words: list[str] | None = None
    heads: list["AttentionSteps"] = field(default_factory=list)  # multi-head: each head's own steps

    def table(self, name: str, decimals: int = 4) -> str:
        """One intermediate as the book prints it: a row per token, `decimals` places."""
        matrix = getattr(self, name)
        if matrix.dim() == 1:
            matrix = matrix.unsqueeze(0)
        width = decimals + 4
        rows = []
        for i, row in enumerate(matrix.tolist()):
            label = self.words[i] if self.words and matrix.shape[0] == len(self.words) else str(i + 1)
            cells = ["-inf".rjust(width) if v == -math.inf else f"{v:{width}.{decimals}f}" for v in row]
            rows.append(f"{label:>8} " + " ".join(cells))
        if self.words and matrix.shape[1] == len(self.words):
            rows.insert(0, " " * 9 + " ".join(w[:width].rjust(width) for w in self.words))
        return f"{name}:\n" + "\n".join(rows)

    def __str__(self) -> str:
        first = ["queries", "keys", "values", "scores"] + (["masked"] if not torch.equal(self.masked, self.scores) else [])
        scale = [f"scale: scores / {self.scale:.4f}"] if self.scale != 1 else []
        return "\n\n".join([self.table(n) for n in first] + scale + [self.table(n) for n in ("weights", "context")])


def _steps(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, causal: bool,
           words: list[str] | None = None) -> AttentionSteps:
    scores = queries @ keys.T  # (T, T): scores[i, j] = q_i . k_j
    masked = scores
    if causal:  # token i may look at tokens 0..i only
        T = scores.shape[0]
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
        masked = scores.masked_fill(future, -math.inf)
    weights = torch.softmax(masked / scale, dim=-1)  # each row sums to 1
    return AttentionSteps(queries, keys, values, scores, scale, masked, weights, weights @ values, words)


@torch.no_grad()
def simplified_attention(x: torch.Tensor = JOURNEY, words: list[str] | None = None) -> AttentionSteps:
    """Attention without trainable weights: each token is its own query, key and value, the scores
    are S = X X^T, unscaled, and each context vector is the softmax-weighted average of all tokens
    (book section 3.3)."""
    x = x.float()
    return _steps(x, x, x, 1.0, causal=False, words=words or _journey_words(x))


@torch.no_grad()
def self_attention(x: torch.Tensor = JOURNEY, d_out: int = 2, seed: int = 123, init: str = "rand",
                   causal: bool = False, words: list[str] | None = None) -> AttentionSteps:
    """Scaled dot-product attention with learned W_q, W_k, W_v (d_in x d_out), scores divided by
    sqrt(d_k). init "rand": the weights are torch.rand draws after torch.manual_seed(seed), query
    first (the book's SelfAttention_v1, seed 123); "linear": three nn.Linear layers without bias
    (SelfAttention_v2 and CausalAttention)."""
    x = x.float()
    torch.manual_seed(seed)
    if init == "rand":
        w_query, w_key, w_value = (torch.rand(x.shape[1], d_out) for _ in range(3))
    elif init == "linear":
        layers = [nn.Linear(x.shape[1], d_out, bias=False) for _ in range(3)]
        w_query, w_key, w_value = (layer.weight.T for layer in layers)  # nn.Linear stores (out, in)
    else:
        raise LucidError(f"init must be 'rand' or 'linear' (got {init!r})")
    queries, keys, values = x @ w_query, x @ w_key, x @ w_value  # (T, d_out) each
    return _steps(queries, keys, values, math.sqrt(d_out), causal, words or _journey_words(x))


def causal_attention(x: torch.Tensor = JOURNEY, d_out: int = 2, seed: int = 123, init: str = "linear",
                     words: list[str] | None = None) -> AttentionSteps:
    """Self-attention where a token sees only itself and the tokens before it: the future scores
    become -inf before the softmax, so their weights are exactly 0 and each row still sums to 1
    (the book's CausalAttention, seed 123; seed 789 gives its masked-weights table)."""
    return self_attention(x, d_out, seed, init, causal=True, words=words)


@torch.no_grad()
def multi_head_attention(x: torch.Tensor = JOURNEY, d_out: int = 4, heads: int = 2, seed: int = 123,
                         causal: bool = True, out_proj: bool = False, words: list[str] | None = None) -> AttentionSteps:
    """Several causal heads side by side, each with d_out / heads dimensions, their context
    vectors concatenated. out_proj False: heads made one after another, each its own three
    nn.Linear layers (the book's MultiHeadAttentionWrapper); True: one W_q, W_k, W_v split into
    heads, then an output projection (the book's MultiHeadAttention)."""
    x = x.float()
    if heads < 1 or d_out % heads:
        raise LucidError(f"d_out {d_out} must be a multiple of heads {heads} (at least 1)")
    D = d_out // heads
    words = words or _journey_words(x)
    torch.manual_seed(seed)
    if not out_proj:
        per_head = []
        for _ in range(heads):
            layers = [nn.Linear(x.shape[1], D, bias=False) for _ in range(3)]
            q, k, v = (x @ layer.weight.T for layer in layers)  # (T, D) each
            per_head.append(_steps(q, k, v, math.sqrt(D), causal, words))
        context = torch.cat([h.context for h in per_head], dim=-1)  # (T, heads * D)
    else:
        w_query, w_key, w_value = (nn.Linear(x.shape[1], d_out, bias=False) for _ in range(3))
        projection = nn.Linear(d_out, d_out)
        q, k, v = w_query(x), w_key(x), w_value(x)  # (T, heads * D)
        per_head = [_steps(q[:, h * D:(h + 1) * D], k[:, h * D:(h + 1) * D], v[:, h * D:(h + 1) * D],
                           math.sqrt(D), causal, words) for h in range(heads)]
        context = projection(torch.cat([h.context for h in per_head], dim=-1))
    first = per_head[0]
    return AttentionSteps(torch.cat([h.queries for h in per_head], -1), torch.cat([h.keys for h in per_head], -1),
                          torch.cat([h.values for h in per_head], -1), first.scores, first.scale, first.masked,
                          first.weights, context, words, per_head)


@torch.no_grad()
def attention_from_qk(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor | None = None, causal: bool = True,
                      words: list[str] | None = None) -> AttentionSteps:
    """Attention from query and key tables written by hand, one row per word and one column per
    feature (m of them): scores Q K^T, scaled by sqrt(m), masked when causal, softmaxed per row.
    Without V, the context vectors average the keys' rows."""
    Q, K = torch.as_tensor(Q, dtype=torch.float32), torch.as_tensor(K, dtype=torch.float32)
    if Q.dim() != 2 or K.dim() != 2 or Q.shape[1] != K.shape[1]:
        raise LucidError(f"Q and K must be tables with the same number of feature columns "
                         f"(got {tuple(Q.shape)} and {tuple(K.shape)})")
    if causal and Q.shape[0] != K.shape[0]:
        raise LucidError("a causal mask needs as many queries as keys")
    values = K if V is None else torch.as_tensor(V, dtype=torch.float32)
    if values.dim() != 2 or values.shape[0] != K.shape[0]:
        raise LucidError(f"V needs one row per key ({K.shape[0]}), got {tuple(values.shape)}")
    return _steps(Q, K, values, math.sqrt(Q.shape[1]), causal, words)


def _journey_words(x: torch.Tensor) -> list[str] | None:
    return JOURNEY_WORDS if x.shape == JOURNEY.shape and torch.equal(x, JOURNEY) else None
