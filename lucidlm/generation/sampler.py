"""Samplers: pure functions from logits to a token, applied as one ordered chain.

temperature -> top-k -> top-p (nucleus, Holtzman et al. 2019) -> min-p (Nguyen et al. 2024) ->
draw. Each filter only sets logits to -inf, so each is testable on a five-element distribution.
Temperature 0 means greedy: the argmax, with no randomness at all.
"""

from __future__ import annotations

from typing import Callable

import torch

Sampler = Callable[..., torch.Tensor]  # (logits (B, V), generator=None) -> token ids (B,)
NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (and any tied with the k-th)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least p."""
    if p >= 1.0:
        return logits
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the tokens ahead
    drop_sorted = mass_before >= p  # the first token always stays (its mass_before is 0)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least min_p times the most likely token's."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p
    return logits.masked_fill(probs < threshold, NEG_INF)


def greedy(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return logits.argmax(dim=-1)


def sampler_chain(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Sampler:
    """A sampler closure: sampler(logits (B, V), generator=None) -> ids (B,). The values are
    trusted: GenerationSettings checks them (make_sampler is the checked entry point)."""
    if temperature == 0:
        return greedy

    def sample(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        logits = apply_temperature(logits.float(), temperature)
        logits = top_k_filter(logits, top_k)
        logits = top_p_filter(logits, top_p)
        logits = min_p_filter(logits, min_p)
        probs = logits.softmax(dim=-1)
        if generator is not None and generator.device != probs.device:
            # seeds make CPU generators, so a seed draws the same way whichever device ran the model
            return torch.multinomial(probs.to(generator.device), 1, generator=generator).squeeze(-1).to(probs.device)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    return sample
