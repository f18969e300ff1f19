"""Text generation: stream_generate, generate and batch_generate over the token engine.

Tokens go through the streaming detokenizer, so only complete UTF-8 text comes out. Stop strings
may span token boundaries: text that could still become a stop string is held back until it
either completes one (then generation stops and the stop string is not emitted) or cannot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import LucidError
from ..tokenizer import StreamingDetokenizer
from .engine import PromptCache, generate_tokens, make_cache
from .processors import LogitsProcessor
from .sampler import Sampler, greedy


@dataclass
class GenerationResponse:
    text: str  # the new complete text (may be empty while a character or stop string is pending)
    token: int
    logprobs: torch.Tensor  # (V,) log-probabilities the token was drawn from
    finish_reason: str | None  # None, "stop" (EOS or a stop string) or "length"
    prompt_tokens: int
    prompt_tps: float  # prompt tokens computed per second (cached ones excluded)
    generation_tokens: int
    generation_tps: float


class TextStream:
    """Detokenizes ids and applies stop strings. add() returns (text to emit, stopped)."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.detokenizer = StreamingDetokenizer(tokenizer)
        self.stops = [s for s in stop if s]
        self.pending = ""  # decoded text that might be the start of a stop string

    def add(self, token: int) -> tuple[str, bool]:
        self.pending += self.detokenizer.add(token)
        if not self.stops:
            text, self.pending = self.pending, ""
            return text, False
        hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
        if hits:
            at = min(hits)[0]
            text, self.pending = self.pending[:at], ""
            return text, True
        # Hold back the longest tail that is a prefix of some stop string.
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        text = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold:]
        return text, False

    def finish(self) -> str:
        text = self.pending + self.detokenizer.flush()
        self.pending = ""
        return text


def prompt_ids(tokenizer, prompt: str | Sequence[int]) -> list[int]:
    """A string prompt is the model's whole input as written, special tokens included; ids pass
    through. (Chat messages go through apply_chat_template, which keeps user text plain.)"""
    if isinstance(prompt, str):
        if not prompt:
            raise LucidError("the prompt is empty")
        return tokenizer.encode(prompt, allowed_special="all", add_bos=tokenizer.add_bos_token)
    ids = [int(i) for i in prompt]
    if not ids:
        raise LucidError("the prompt is empty")
    return ids


def _check(max_tokens: int) -> None:
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise LucidError(f"max tokens must be at least 1 (got {max_tokens})")


def stream_generate(model, tokenizer, prompt: str | Sequence[int], max_tokens: int = 256,
                    sampler: Sampler | None = None, logits_processors: Sequence[LogitsProcessor] = (),
                    stop: str | Sequence[str] | None = None, seed: int | None = None,
                    prompt_cache: PromptCache | None = None, generator: torch.Generator | None = None,
                    overflow: str = "stop") -> Iterator[GenerationResponse]:
    """Yield one GenerationResponse per generated token; the last has a finish_reason.

    seed makes sampling reproducible; a generator (which seed would create) can be passed instead
    to continue one random stream across calls, as the chat does across turns. overflow: what to
    do when the context is full, "stop" or "shift" (see generate_tokens)."""
    if overflow not in ("stop", "shift"):
        raise LucidError(f"overflow must be stop or shift (got {overflow!r})")
    _check(max_tokens)
    ids = prompt_ids(tokenizer, prompt)
    cache = prompt_cache if prompt_cache is not None else PromptCache(model)
    if not cache.sliding and len(ids) >= model.config.context_length:
        raise LucidError(f"the prompt has {len(ids)} tokens, which fills the model's context of "
                         f"{model.config.context_length}")
    # Each generated token but the last takes a cache slot, so this never runs past the context.
    bounded = not cache.sliding and overflow == "stop"
    limit = min(max_tokens, model.config.context_length - len(ids)) if bounded else max_tokens
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    stream = TextStream(tokenizer, [stop] if isinstance(stop, str) else (stop or ()))
    eos = tokenizer.eos_token_ids
    start = time.perf_counter()
    prompt_tps = generation_tps = 0.0
    first = start
    tokens = generate_tokens(model, ids, cache, sampler, logits_processors, generator, overflow)
    for n, (token, logprobs) in enumerate(tokens, 1):
        now = time.perf_counter()
        if n == 1:
            first = now
            prompt_tps = cache.last_prefill / max(now - start, 1e-9)
        generation_tps = (n - 1) / (now - first) if n > 1 else 0.0
        if token in eos:
            text, finish = stream.finish(), "stop"
        else:
            text, stopped = stream.add(token)
            finish = "stop" if stopped else None
            if finish is None and n >= limit:
                text, finish = text + stream.finish(), "length"
        yield GenerationResponse(text, token, logprobs, finish, len(ids), prompt_tps, n, generation_tps)
        if finish is not None:
            return


def generate(model, tokenizer, prompt: str | Sequence[int], max_tokens: int = 256, verbose: bool = False,
             **kwargs) -> str:
    """The whole completion as one string (kwargs as for stream_generate)."""
    pieces = []
    response = None
    for response in stream_generate(model, tokenizer, prompt, max_tokens, **kwargs):
        pieces.append(response.text)
        if verbose:
            print(response.text, end="", flush=True)
    if verbose and response is not None:
        print(f"\n[{response.prompt_tokens} prompt tokens at {response.prompt_tps:.1f} tok/s, "
              f"{response.generation_tokens} generated at {response.generation_tps:.1f} tok/s]")
    return "".join(pieces)


@torch.no_grad()
def batch_generate(model, tokenizer, prompts: Sequence[str | Sequence[int]], max_tokens: int = 256,
                   sampler: Sampler | None = None, stop: str | Sequence[str] | None = None,
                   seed: int | None = None) -> list[str]:
    """Generate for several prompts at once: left padding and an attention mask, each row
    finishing on its own. Greedy rows give the same tokens as generating each prompt alone."""
    _check(max_tokens)
    if not prompts:
        return []
    rows = [prompt_ids(tokenizer, p) for p in prompts]
    longest = max(len(r) for r in rows)
    if longest + max_tokens > model.config.context_length and not model.config.all_layers_slide:
        max_tokens = model.config.context_length - longest
        if max_tokens < 1:
            raise LucidError(f"the longest prompt has {longest} tokens, which fills the model's context")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = model.tok_emb.weight.device
    ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows], device=device)
    cache = make_cache(model, batch_size=len(rows), capacity=longest + max_tokens)
    sampler = sampler or greedy
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    streams = [TextStream(tokenizer, [stop] if isinstance(stop, str) else (stop or ())) for _ in rows]
    texts = [""] * len(rows)
    done = [False] * len(rows)
    eos = tokenizer.eos_token_ids
    logits = model(ids, attention_mask=mask, cache=cache, logits_for="last")[:, -1].float()  # (B, V)
    for step in range(max_tokens):
        tokens = sampler(logits, generator)  # (B,)
        for row, token in enumerate(tokens.tolist()):
            if done[row]:
                continue
            if token in eos:
                texts[row] += streams[row].finish()
                done[row] = True
                continue
            text, stopped = streams[row].add(token)
            texts[row] += text
            done[row] = stopped
        if all(done) or step == max_tokens - 1:
            break
        logits = model(tokens[:, None], cache=cache, logits_for="last")[:, -1].float()
    for row in range(len(rows)):
        if not done[row]:
            texts[row] += streams[row].finish()
    return texts
