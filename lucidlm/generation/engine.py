"""The token engine: prefill the prompt once, then one token at a time through the KV cache.

PromptCache pairs a KV cache with the token ids it holds, so a prompt that extends the previous
one (the next chat turn) only computes its new tokens. generate_tokens is the loop: logits ->
processors -> sampler -> token, with nothing per token that grows with the context.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..errors import LucidError
from ..model import KVCache, SlidingKVCache
from .processors import LogitsProcessor
from .sampler import Sampler, greedy

PREFILL_CHUNK = 512  # tokens per prefill forward: bounds activation memory for long prompts


def make_cache(model, batch_size: int = 1, capacity: int | None = None) -> KVCache:
    """The right cache for the model: sliding when every layer is local, else a growing one."""
    weight = model.tok_emb.weight
    kind = SlidingKVCache if model.config.all_layers_slide else KVCache
    if capacity is None:
        capacity = min(model.config.context_length, 1024)
    return kind(model.config, batch_size, capacity, device=weight.device, dtype=weight.dtype)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """A KV cache plus the ids it holds. `prefill(ids)` reuses the longest common prefix."""

    def __init__(self, model, capacity: int | None = None) -> None:
        self.model = model
        self.cache = make_cache(model, capacity=capacity)
        self.tokens: list[int] = []
        self.last_prefill = 0  # tokens the last prefill actually computed
        self.reused = 0  # tokens the last prefill found already cached

    @property
    def sliding(self) -> bool:
        return isinstance(self.cache, SlidingKVCache)

    def room(self) -> int:
        """How many more tokens fit (unbounded for a sliding cache)."""
        if self.sliding:
            return 1 << 62
        return self.model.config.context_length - len(self.tokens)

    def reset(self) -> None:
        self.cache.reset()
        self.tokens = []

    def truncate(self, n: int) -> None:
        """Keep only the first n cached tokens (roll back a turn)."""
        n = min(n, len(self.tokens))
        try:
            self.cache.truncate(n)
            self.tokens = self.tokens[:n]
        except LucidError:  # a sliding cache that already forgot those tokens: start over
            self.reset()

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Make the cache hold exactly `ids`; return the logits (V,) after the last one."""
        ids = list(ids)
        if not ids:
            raise LucidError("the prompt is empty")
        limit = self.model.config.context_length
        if len(ids) > limit and not self.sliding:
            raise LucidError(f"the prompt has {len(ids)} tokens; the model's context is {limit}")
        # The last token is always recomputed: its logits are what the next token comes from.
        keep = min(common_prefix(self.tokens, ids), len(ids) - 1)
        self.truncate(keep)
        keep = len(self.tokens)
        new = ids[keep:]
        logits = None
        for start in range(0, len(new), PREFILL_CHUNK):
            logits = self._forward(new[start:start + PREFILL_CHUNK])
        self.reused, self.last_prefill = keep, len(new)
        return logits

    def step(self, token: int) -> torch.Tensor:
        return self._forward([token])

    @torch.no_grad()  # not inference_mode: the cache's tensors must stay usable outside it
    def _forward(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids], dtype=torch.long, device=self.cache.device)
        logits = self.model(x, cache=self.cache, logits_for="last")  # (1, 1, V)
        self.tokens.extend(ids)
        return logits[0, -1].float()


def generate_tokens(model, prompt_ids: Sequence[int], prompt_cache: PromptCache | None = None,
                    sampler: Sampler | None = None, logits_processors: Sequence[LogitsProcessor] = (),
                    generator: torch.Generator | None = None,
                    overflow: str = "stop") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (token, logprobs (V,)) until the caller stops or the context is full. logprobs are
    the log-softmax of the processed logits, before temperature and filtering.

    overflow="shift": when the context is full, keep its newer half and go on (positions restart,
    as nanoGPT's cropping does); "stop": end the stream there.
    """
    cache = prompt_cache if prompt_cache is not None else PromptCache(model)
    sampler = sampler or greedy
    logits = cache.prefill(prompt_ids)
    history = list(prompt_ids) if logits_processors else None
    while True:
        for process in logits_processors:
            logits = process(history, logits)
        logprobs = logits.log_softmax(dim=-1)
        token = int(sampler(logits[None], generator)[0])
        yield token, logprobs
        if history is not None:
            history.append(token)
        if cache.room() > 0:
            logits = cache.step(token)
        elif overflow == "shift":
            keep = cache.tokens[len(cache.tokens) - model.config.context_length // 2 + 1:] + [token]
            cache.reset()
            logits = cache.prefill(keep)
        else:
            return
