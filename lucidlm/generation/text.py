"""Text generation over the token engine: stream_batch_generate, and stream_generate, generate and
batch_generate as its views.

Tokens go through the streaming detokenizer, so only complete UTF-8 text comes out. Stop strings
may span token boundaries: text that could still become a stop string is held back until it
either completes one (then the row stops and the stop string is not emitted) or cannot. Every row
has its own GenerationSettings and finishes on its own (EOS, a stop string, max_tokens, the end of
the context).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..errors import LucidError
from ..tokenizer import StreamingDetokenizer
from .engine import PromptCache, TokenEngine
from .processors import LogitsProcessor
from .sampler import Sampler
from .settings import GenerationSettings


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
    row: int = 0  # which prompt of a batch this token belongs to


class TextStream:
    """Detokenizes ids and applies stop strings. add() returns (text to emit, stopped)."""

    def __init__(self, tokenizer, stop: Sequence[str] = ()) -> None:
        self.detokenizer = StreamingDetokenizer(tokenizer)
        self.stops = list(stop)
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


def check_generates(model) -> None:
    """Only a causal model with an LM head predicts the next token."""
    config = model.config
    if config.is_encoder_decoder:
        raise LucidError("this model is an encoder-decoder: it writes a target for a source "
                         "(try lucidlm translate, or generate_seq2seq from Python)")
    if not config.causal or config.head != "lm":
        raise LucidError("this model is an encoder: it reads a text whole and does not generate "
                         "(try lucidlm embed, or lucidlm fill-mask for a masked-LM head)")


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


@dataclass
class Request:
    """One row of a batch: its prompt ids, settings, and the sampling pieces built from them
    (or given directly, the mlx-lm way)."""

    ids: list[int]
    settings: GenerationSettings
    sampler: Sampler | None = None
    processors: Sequence[LogitsProcessor] | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        self.sampler = self.sampler or self.settings.sampler()
        self.processors = self.settings.logits_processors() if self.processors is None else list(self.processors)
        self.generator = self.generator if self.generator is not None else self.settings.generator()


class RowText:
    """One row's text, stop conditions and counts."""

    def __init__(self, tokenizer, request: Request, limit: int) -> None:
        self.stream = TextStream(tokenizer, request.settings.stop)
        self.eos = tokenizer.eos_token_ids
        self.limit = limit
        self.generated = 0

    def add(self, token: int) -> tuple[str, str | None]:
        self.generated += 1
        if token in self.eos:
            return self.stream.finish(), "stop"
        text, stopped = self.stream.add(token)
        if stopped:
            return text, "stop"
        if self.generated >= self.limit:
            return text + self.stream.finish(), "length"
        return text, None


def _stream_requests(model, tokenizer, requests: list[Request],
                     prompt_cache: PromptCache | None = None) -> Iterator[GenerationResponse]:
    """The one loop every text API runs: the engine's tokens, each row's text and finish."""
    check_generates(model)
    overflows = {r.settings.overflow for r in requests}
    if len(overflows) > 1:
        raise LucidError("the rows of one batch must share the overflow setting")
    overflow = overflows.pop()
    context = model.config.context_length
    cache = prompt_cache if prompt_cache is not None else PromptCache(model, batch_size=len(requests))
    longest = max(len(r.ids) for r in requests)
    if not cache.sliding and longest >= context:
        raise LucidError(f"the prompt has {longest} tokens, which fills the model's context of {context}")
    # Each generated token but the last takes a cache slot, so a bounded row never runs past the
    # context (rows are left-padded to the longest prompt).
    bounded = not cache.sliding and overflow == "stop"
    rows = [RowText(tokenizer, r, min(r.settings.max_tokens, context - longest) if bounded else r.settings.max_tokens)
            for r in requests]
    engine = TokenEngine(model, [r.ids for r in requests], [r.sampler for r in requests],
                         [r.processors for r in requests], [r.generator for r in requests], cache, overflow)
    start = time.perf_counter()
    first = prompt_tps = None
    while True:
        step = engine.step()
        if not step:
            return
        now = time.perf_counter()
        if first is None:
            first, prompt_tps = now, cache.last_prefill / max(now - start, 1e-9)
        for index, token, logprobs in step:
            row = rows[index]
            text, finish = row.add(token)
            if finish is not None:
                engine.finish(index)
            tps = (row.generated - 1) / (now - first) if row.generated > 1 else 0.0
            yield GenerationResponse(text, token, logprobs, finish, len(requests[index].ids), prompt_tps,
                                     row.generated, tps, index)


def _settings(settings: GenerationSettings | None, **given) -> GenerationSettings:
    """`settings` (or the defaults) with the keyword arguments that were given."""
    settings = settings or GenerationSettings()
    changes = {name: value for name, value in given.items() if value is not None}
    return settings.replace(**changes) if changes else settings


def _per_row(settings: GenerationSettings | Sequence[GenerationSettings] | None, n: int,
             **given) -> list[GenerationSettings]:
    """One GenerationSettings for each of n prompts, with the given keyword arguments applied."""
    if settings is None or isinstance(settings, GenerationSettings):
        settings = [settings] * n
    if len(settings) != n:
        raise LucidError(f"{n} prompts but {len(settings)} settings")
    return [_settings(s, **given) for s in settings]


def stream_generate(model, tokenizer, prompt: str | Sequence[int], max_tokens: int | None = None,
                    sampler: Sampler | None = None, logits_processors: Sequence[LogitsProcessor] | None = None,
                    stop: str | Sequence[str] | None = None, seed: int | None = None,
                    prompt_cache: PromptCache | None = None, generator: torch.Generator | None = None,
                    overflow: str | None = None,
                    settings: GenerationSettings | None = None) -> Iterator[GenerationResponse]:
    """Yield one GenerationResponse per generated token; the last has a finish_reason.

    `settings` says how to generate; max_tokens, stop, seed and overflow, when given, override
    it, and a sampler or logits processors (mlx-lm's make_sampler, make_logits_processors) replace
    the ones it would build. A generator (which seed would create) continues one random stream
    across calls, as the chat does across turns. A prompt_cache keeps the KV cache between calls."""
    settings = _settings(settings, max_tokens=max_tokens, stop=stop, seed=seed, overflow=overflow)
    request = Request(prompt_ids(tokenizer, prompt), settings, sampler, logits_processors, generator)
    return _stream_requests(model, tokenizer, [request], prompt_cache)


def stream_batch_generate(model, tokenizer, prompts: Sequence[str | Sequence[int]],
                          settings: GenerationSettings | Sequence[GenerationSettings] | None = None
                          ) -> Iterator[GenerationResponse]:
    """Generate for several prompts at once (left padding, one forward per step for all rows),
    each row with its own settings (one GenerationSettings for all, or one per prompt) and its own
    finish. Yields GenerationResponses in step order; `.row` says which prompt each is for."""
    if not prompts:
        return iter(())
    requests = [Request(prompt_ids(tokenizer, p), s) for p, s in zip(prompts, _per_row(settings, len(prompts)))]
    return _stream_requests(model, tokenizer, requests)


def generate(model, tokenizer, prompt: str | Sequence[int], max_tokens: int | None = None, verbose: bool = False,
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


def batch_generate(model, tokenizer, prompts: Sequence[str | Sequence[int]], max_tokens: int | None = None,
                   sampler: Sampler | None = None, stop: str | Sequence[str] | None = None, seed: int | None = None,
                   settings: GenerationSettings | Sequence[GenerationSettings] | None = None) -> list[str]:
    """Every prompt's whole completion (stream_batch_generate, collected). max_tokens, stop and seed
    override the settings; a sampler replaces theirs. Greedy rows give the same tokens as
    generating each prompt alone."""
    texts = [""] * len(prompts)
    if not prompts:
        return texts
    settings = _per_row(settings, len(prompts), max_tokens=max_tokens, stop=stop, seed=seed)
    requests = [Request(prompt_ids(tokenizer, p), s, sampler) for p, s in zip(prompts, settings)]
    for response in _stream_requests(model, tokenizer, requests):
        texts[response.row] += response.text
    return texts
