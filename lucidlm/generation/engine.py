"""The token engine: prefill the prompts once, then one token per row at a time through the KV cache.

PromptCache pairs a KV cache with the token ids each row holds; with one row, a prompt that
extends the previous one (the next chat turn) only computes its new tokens. TokenEngine is the one
decode loop: B rows prefilled together (left padding), each with its own sampler, processors and
random generator; a row that finishes leaves the batch. `generate_tokens` is that loop at B = 1.
Nothing per token grows with the context.
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
    kind = SlidingKVCache if model.config.all_layers_slide else KVCache
    if capacity is None:
        capacity = min(model.config.context_length, 1024)
    return kind(model.config, batch_size, capacity, device=model.device, dtype=model.dtype)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class PromptCache:
    """A KV cache plus the ids each row holds. With one row, `prefill(ids)` reuses the longest
    common prefix of what is cached."""

    def __init__(self, model, capacity: int | None = None, batch_size: int = 1, cache: KVCache | None = None) -> None:
        self.model = model
        self.cache = cache if cache is not None else make_cache(model, batch_size, capacity)
        batch_size = self.cache.batch_size
        self.rows: list[list[int]] = [[] for _ in range(batch_size)]
        self.last_prefill = 0  # tokens the last prefill actually computed (per row, padding excluded)
        self.reused = 0  # tokens the last prefill found already cached

    @property
    def tokens(self) -> list[int]:
        """The ids a one-row cache holds."""
        return self.rows[0]

    @property
    def sliding(self) -> bool:
        return isinstance(self.cache, SlidingKVCache)

    def room(self) -> int:
        """How many more tokens fit (unbounded for a sliding cache)."""
        if self.sliding:
            return 1 << 62
        return self.model.config.context_length - self.cache.length

    def reset(self) -> None:
        self.cache.reset()
        self.rows = [[] for _ in self.rows]

    def truncate(self, n: int) -> None:
        """Keep only the first n cached tokens of a one-row cache (roll back a turn)."""
        n = min(n, len(self.tokens))
        try:
            self.cache.truncate(n)
            self.rows[0] = self.tokens[:n]
        except LucidError:  # a sliding cache that already forgot those tokens: start over
            self.reset()

    def prefill(self, ids: Sequence[int]) -> torch.Tensor:
        """Make a one-row cache hold exactly `ids`; return the logits (V,) after the last one."""
        ids = self._checked(ids)
        # The last token is always recomputed: its logits are what the next token comes from.
        keep = min(common_prefix(self.tokens, ids), len(ids) - 1)
        self.truncate(keep)
        keep = len(self.tokens)
        new = ids[keep:]
        logits = None
        chunk = self._chunk(len(ids))
        for start in range(0, len(new), chunk):
            logits = self._forward([new[start:start + chunk]])
        self.reused, self.last_prefill = keep, len(new)
        return logits[0]

    def prefill_rows(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Make the cache hold these rows (left-padded to one length); return the logits (B, V)
        after each row's last token. One row goes through `prefill`, reusing what is cached."""
        if len(rows) != len(self.rows):
            raise LucidError(f"this cache holds {len(self.rows)} rows, not {len(rows)}")
        if len(rows) == 1:
            return self.prefill(rows[0])[None]
        rows = [self._checked(r) for r in rows]
        self.reset()
        longest = max(len(r) for r in rows)
        device = self.cache.device
        ids = torch.tensor([[0] * (longest - len(r)) + r for r in rows], device=device)  # (B, T)
        mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows], device=device)
        logits = None
        chunk = self._chunk(longest)
        for start in range(0, longest, chunk):
            end = start + chunk
            logits = self._forward_tensor(ids[:, start:end], mask[:, start:end])
        self.rows = [list(r) for r in rows]
        self.reused, self.last_prefill = 0, sum(len(r) for r in rows)
        return logits

    def step(self, token: int) -> torch.Tensor:
        return self._forward([[token]])[0]

    def step_rows(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token per row; the logits (B, V) after them."""
        return self._forward([[t] for t in tokens])

    def append(self, other: "PromptCache") -> None:
        """other's rows join these (continuous batching); other should not be used afterwards."""
        self.cache.append_rows(other.cache)
        self.rows.extend(other.rows)

    @classmethod
    def holding(cls, model, cache: KVCache, ids: Sequence[int]) -> "PromptCache":
        """A one-row PromptCache over a cache that already holds `ids` (a kept prefix)."""
        made = cls(model, cache=cache)
        made.rows = [list(ids)]
        return made

    def keep_rows(self, indices: Sequence[int]) -> None:
        """Forget every row not listed (finished rows leave the batch)."""
        self.cache.keep_rows(indices)
        self.rows = [self.rows[i] for i in indices]

    def shift(self, tokens: Sequence[int]) -> torch.Tensor:
        """The context is full: keep the newer half of it (a shorter row keeps all it has), then
        feed `tokens` (one per row); positions restart, as nanoGPT's cropping does. The logits
        (B, V) after them."""
        half = self.model.config.context_length // 2
        kept = [row[max(0, len(row) - half + 1):] + [token] for row, token in zip(self.rows, tokens)]
        self.reset()
        return self.prefill_rows(kept)

    def _checked(self, ids: Sequence[int]) -> list[int]:
        ids = list(ids)
        if not ids:
            raise LucidError("the prompt is empty")
        limit = self.model.config.context_length
        if len(ids) > limit and not self.sliding:
            raise LucidError(f"the prompt has {len(ids)} tokens; the model's context is {limit}")
        return ids

    def _chunk(self, length: int) -> int:
        """Tokens per prefill forward for a sequence of this length. subtle: past longrope's switch
        every key rotates with the long factors, which a forward chooses from its own furthest
        position, so a prompt that crosses the switch is computed in one forward."""
        switch = self.model.config.rope_switch_length
        return length if switch is not None and length > switch else PREFILL_CHUNK

    def _crosses_rope_switch(self, rows: list[list[int]]) -> bool:
        """True when these new tokens take the cached rows past longrope's switch: the cached keys
        were rotated with the short factors and must be recomputed (as transformers' Phi-3 does)."""
        switch = self.model.config.rope_switch_length
        if switch is None or not self.rows:
            return False
        before = max(len(row) for row in self.rows)
        after = max(len(row) + len(ids) for row, ids in zip(self.rows, rows))
        return 0 < before <= switch < after

    def _forward(self, rows: list[list[int]]) -> torch.Tensor:
        if self._crosses_rope_switch(rows):
            whole = [row + ids for row, ids in zip(self.rows, rows)]
            self.reset()
            return self.prefill_rows(whole)
        logits = self._forward_tensor(torch.tensor(rows, dtype=torch.long, device=self.cache.device), None)
        for row, ids in zip(self.rows, rows):
            row.extend(ids)
        return logits

    @torch.no_grad()  # not inference_mode: the cache's tensors must stay usable outside it
    def _forward_tensor(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        logits = self.model(ids, attention_mask=mask, cache=self.cache, logits_for="last")  # (B, 1, V)
        return logits[:, -1].float()


class TokenEngine:
    """The one decode loop. Each `step()` gives (row, token, logprobs (V,)) for every row still
    generating; `finish(row)` takes a row out before the next step. logprobs are the
    log-softmax of the processed logits, before temperature and filtering.

    `add(prompt, ...)` lets a new row join between steps (continuous batching, as a server needs):
    its prompt is prefilled alone, from a PromptCache that may already hold a prefix of it, and
    its cache joins the batch's, left-padded. An engine may start with no rows at all.

    overflow="shift": when the context is full, keep its newer half and go on; "stop": `step()`
    returns [] there."""

    def __init__(self, model, prompts: Sequence[Sequence[int]], samplers: Sequence[Sampler | None],
                 processors: Sequence[Sequence[LogitsProcessor]], generators: Sequence[torch.Generator | None],
                 prompt_cache: PromptCache | None = None, overflow: str = "stop") -> None:
        self.model = model
        self.cache = prompt_cache if prompt_cache is not None else PromptCache(model, batch_size=len(prompts))
        self.overflow = overflow
        # Each row's own state, by row number; a row's entries go when it leaves the batch, so a
        # long-running engine (a server's) holds only what its rows need.
        self.prompts: dict[int, list[int]] = {}
        self.samplers: dict[int, Sampler] = {}
        self.processors: dict[int, list[LogitsProcessor]] = {}
        self.generators: dict[int, torch.Generator | None] = {}
        self.histories: dict[int, list[int] | None] = {}  # what the processors look back at
        self.pending: dict[int, int] = {}  # row -> its last token, not yet fed to the model
        self.next_row = 0
        for prompt, sampler, procs, generator in zip(prompts, samplers, processors, generators):
            self._register(prompt, sampler, procs, generator)
        self.active = list(range(len(prompts)))  # rows in the batch, in cache order
        self.finished: set[int] = set()  # rows asked to finish, still in the batch until the next step
        self.logits: torch.Tensor | None = None  # (len(active), V) for the next step
        # rows added since the last step: (row, its prefix cache, the logits after its prompt if known)
        self.joining: list[tuple[int, PromptCache | None, torch.Tensor | None]] = []
        self.initial = len(prompts)  # rows prefilled together by the first step
        self.started = False

    def _register(self, prompt, sampler, processors, generator) -> int:
        row = self.next_row
        self.next_row += 1
        self.prompts[row] = list(prompt)
        self.samplers[row] = sampler or greedy
        self.processors[row] = list(processors)
        self.generators[row] = generator
        self.histories[row] = list(prompt) if processors else None
        return row

    def _forget(self, row: int) -> None:
        for state in (self.prompts, self.samplers, self.processors, self.generators, self.histories, self.pending):
            state.pop(row, None)
        self.finished.discard(row)

    def add(self, prompt: Sequence[int], sampler: Sampler | None = None,
            processors: Sequence[LogitsProcessor] = (), generator: torch.Generator | None = None,
            prefix: PromptCache | None = None, logits: torch.Tensor | None = None) -> int:
        """A new row, prefilled at the next step (from `prefix`, a one-row PromptCache that may
        hold the start of the prompt already); returns its row number. When `prefix` already holds
        the whole prompt, its `logits` (V,) from that prefill spare the row a forward."""
        if logits is not None and (prefix is None or prefix.tokens != list(prompt)):
            raise LucidError("logits come with a prefix that holds the whole prompt")
        row = self._register(prompt, sampler, processors, generator)
        self.joining.append((row, prefix, logits))
        return row

    def finish(self, row: int) -> None:
        self.finished.add(row)

    @property
    def rows_running(self) -> int:
        """Rows in the batch that have not finished, plus those waiting to join."""
        return sum(row not in self.finished for row in self.active) + \
            sum(row not in self.finished for row, _, _ in self.joining)

    def step(self) -> list[tuple[int, int, torch.Tensor]]:
        if not self.started:
            self.started = True
            if self.initial:
                self.logits = self.cache.prefill_rows([self.prompts[row] for row in range(self.initial)])
        elif not self._advance():
            return []
        self._join()
        out = []
        for slot, row in enumerate(self.active):
            logits = self.logits[slot]
            for process in self.processors[row]:
                logits = process(self.histories[row], logits)
            token = int(self.samplers[row](logits[None], self.generators[row])[0])
            if self.histories[row] is not None:
                self.histories[row].append(token)
            self.pending[row] = token
            out.append((row, token, logits.log_softmax(dim=-1)))
        return out

    def row_slot(self, row: int) -> int:
        """Where a running row sits in the cache (its index among the batch's rows)."""
        return self.active.index(row)

    def _advance(self) -> bool:
        """Feed the last tokens of the rows still going; False when none is (and none joins), or
        the context is full."""
        keep = [slot for slot, row in enumerate(self.active) if row not in self.finished]
        if not keep and not self.joining:
            return False
        if len(keep) < len(self.active):
            for slot in set(range(len(self.active))) - set(keep):
                self._forget(self.active[slot])
            self.cache.keep_rows(keep)
            self.active = [self.active[slot] for slot in keep]
            if not self.cache.sliding:
                self.cache.cache.drop_leading_padding()
        if not self.active:
            self.logits = None
            return True
        tokens = [self.pending[row] for row in self.active]
        if self.cache.room() > 0:
            self.logits = self.cache.step_rows(tokens)
        elif self.overflow == "shift":
            self.logits = self.cache.shift(tokens)
        else:
            return False
        return True

    def _join(self) -> None:
        for row, prefix, known in self.joining:
            if row in self.finished:  # finished before it joined (its client went away): never computed
                self._forget(row)
                continue
            alone = prefix if prefix is not None else PromptCache(self.model)
            logits = (known if known is not None else alone.prefill(self.prompts[row]))[None]  # (1, V)
            if self.active:
                self.cache.append(alone)
                self.logits = torch.cat([self.logits, logits])
            else:  # the batch was empty: this row's cache is the batch's now
                self.cache, self.logits = alone, logits
            self.active.append(row)
        self.joining = []


def generate_tokens(model, prompt_ids: Sequence[int], prompt_cache: PromptCache | None = None,
                    sampler: Sampler | None = None, logits_processors: Sequence[LogitsProcessor] = (),
                    generator: torch.Generator | None = None,
                    overflow: str = "stop") -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (token, logprobs (V,)) for one prompt until the caller stops or the context is full:
    the engine at B = 1."""
    engine = TokenEngine(model, [prompt_ids], [sampler], [logits_processors], [generator], prompt_cache, overflow)
    while True:
        out = engine.step()
        if not out:
            return
        yield out[0][1], out[0][2]
