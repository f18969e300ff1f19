"""The prompt cache shared across requests: the KV cache of recently finished conversations, so a
request that starts the same way (the next turn of a chat, the same system prompt) computes only
what is new.

Each entry is one row's ids and their keys and values, copied out of the batch when its request
finished. A lookup copies the entry with the longest common prefix into a fresh one-row
PromptCache, which PromptCache.prefill then cuts to that prefix. Entries are dropped oldest first
beyond a budget of tokens (the memory is the model's KV bytes per token times that budget).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

from ..generation import PromptCache
from ..generation.engine import common_prefix
from ..model import KVCache

MIN_SHARED = 4  # shorter shared prefixes are not worth a copy


class PromptStore:
    def __init__(self, model, budget_tokens: int) -> None:
        self.model = model
        self.budget = budget_tokens
        self.entries: OrderedDict[int, tuple[list[int], KVCache]] = OrderedDict()
        self._next_key = 0

    @property
    def tokens(self) -> int:
        return sum(len(ids) for ids, _ in self.entries.values())

    def lookup(self, ids: Sequence[int]) -> PromptCache | None:
        """A one-row PromptCache holding a copy of the longest stored prefix of `ids`, or None."""
        best, best_key = 0, None
        for key, (stored, _) in self.entries.items():
            shared = common_prefix(stored, ids)
            if shared > best:
                best, best_key = shared, key
        if best_key is None or best < MIN_SHARED:
            return None
        self.entries.move_to_end(best_key)
        stored, cache = self.entries[best_key]
        return PromptCache.holding(self.model, cache.take_row(0), stored)

    def keep(self, ids: Sequence[int], cache: KVCache) -> None:
        """Store a finished row (ids and their one-row cache); an entry it extends is replaced."""
        ids = list(ids)
        if len(ids) < MIN_SHARED or len(ids) > self.budget:
            return
        for key, (stored, _) in list(self.entries.items()):
            if common_prefix(stored, ids) == len(stored):  # the new entry holds all of it
                del self.entries[key]
        self.entries[self._next_key] = (ids, cache)
        self._next_key += 1
        while self.tokens > self.budget:
            self.entries.popitem(last=False)
