"""GenerationSettings: how to generate, validated once, for every client of the engine.

`lucidlm generate` and `lucidlm chat` flags, the chat's `/set`, `stream_generate(settings=...)` and
(later) HTTP requests are views of this one dataclass: its fields generate the flags, and every
value is checked here, where settings are made (finite numbers, ranges, types), so a NaN penalty
or a negative temperature never reaches the logits. It builds the sampler, the logits processors
and the seeded random generator that the engine uses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from ..errors import SettingError, check_known_fields
from ..flags import finite_number, setting
from .processors import LogitsProcessor, processor_chain
from .sampler import Sampler, sampler_chain

MIN_TEMPERATURE = 1e-6  # far below this, logits / temperature overflow float32: use 0 (greedy)
OVERFLOWS = ("stop", "shift")
# What a field is called in messages, where people call it something else than its Python name.
LABELS = {"temperature": "temperature", "top_k": "top-k", "top_p": "top-p", "min_p": "min-p"}


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = setting(0.0, "sampling temperature; 0 = greedy", flags=("--temp", "--temperature"))
    top_k: int = setting(0, "keep the k most likely tokens; 0 = off")
    top_p: float = setting(1.0, "nucleus sampling: keep the most likely tokens up to this probability mass, "
                                "in (0, 1]")
    min_p: float = setting(0.0, "drop tokens below min-p x the most likely token's probability")
    repetition_penalty: float = setting(1.0, "divide the logits of recent tokens by this (1 = off)")
    presence_penalty: float = setting(0.0, "subtract this from the logit of every recent token")
    frequency_penalty: float = setting(0.0, "subtract this per occurrence of a recent token")
    penalty_window: int = setting(64, "how many recent tokens the penalties look at")
    logit_bias: dict[int, float] = setting({}, "add VALUE to token ID's logit; -inf bans it (repeatable)")
    max_tokens: int = setting(256, "most tokens per answer")
    stop: tuple[str, ...] = setting((), "stop at this string, which is not printed (repeatable)", many="append")
    seed: int | None = setting(None, "random seed, for reproducible sampling")
    overflow: str = setting("stop", "when the context is full: stop, or shift (keep its newer half and go on)")

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        self._validate()
        # Checked once, so never changed after: a read-only view of a private copy.
        object.__setattr__(self, "logit_bias", MappingProxyType(dict(self.logit_bias)))

    def _validate(self) -> None:
        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise SettingError(name, f"{LABELS.get(name, name)} {rule} (got {getattr(self, name)!r})")

        def number(name: str) -> bool:
            return finite_number(getattr(self, name))

        def whole(name: str, low: int) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool) and value >= low

        need(number("temperature") and (self.temperature == 0 or self.temperature >= MIN_TEMPERATURE), "temperature",
             f"must be 0 (greedy) or at least {MIN_TEMPERATURE}")
        need(whole("top_k", 0), "top_k", "must be a whole number >= 0 (0: off)")
        need(number("top_p") and 0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        need(number("min_p") and 0 <= self.min_p <= 1, "min_p", "must be in [0, 1]")
        need(number("repetition_penalty") and self.repetition_penalty > 0, "repetition_penalty",
             "must be a number > 0 (1: off)")
        for name in ("presence_penalty", "frequency_penalty"):
            need(number(name), name, "must be a finite number")
        need(whole("penalty_window", 1), "penalty_window", "must be a whole number >= 1")
        need(isinstance(self.logit_bias, Mapping) and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 0 and (finite_number(v) or v == -math.inf)
            for k, v in self.logit_bias.items()),
            "logit_bias", "must map token ids >= 0 to finite numbers (or -inf, to ban a token)")
        need(whole("max_tokens", 1), "max_tokens", "must be at least 1")
        need(all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings")
        need(self.seed is None or (whole("seed", 0) and self.seed < 2 ** 64), "seed",
             "must be a whole number in [0, 2**64)")
        need(self.overflow in OVERFLOWS, "overflow", f"must be one of {', '.join(OVERFLOWS)}")

    # --- what the engine uses ----------------------------------------------------------------------

    def sampler(self) -> Sampler:
        return sampler_chain(self.temperature, self.top_k, self.top_p, self.min_p)

    def logits_processors(self) -> list[LogitsProcessor]:
        return processor_chain(self.logit_bias, self.repetition_penalty, self.presence_penalty,
                               self.frequency_penalty, self.penalty_window)

    def generator(self) -> torch.Generator | None:
        """A CPU generator seeded with `seed` (a seed draws the same on every device), or None."""
        return torch.Generator().manual_seed(self.seed) if self.seed is not None else None

    # --- copies and serialisation ------------------------------------------------------------------

    def replace(self, **changes: Any) -> "GenerationSettings":
        """A copy with these fields changed, validated again."""
        check_known_fields(GenerationSettings, changes, "unknown generation setting(s):")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**data, "stop": list(self.stop), "logit_bias": dict(self.logit_bias)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GenerationSettings":
        check_known_fields(cls, data, "unknown generation setting(s):")
        return cls(**data)


def make_sampler(temp: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> Sampler:
    """A sampler closure (mlx-lm's signature): sampler(logits (B, V), generator=None) -> ids (B,)."""
    return GenerationSettings(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p).sampler()


def make_logits_processors(logit_bias: dict[int, float] | None = None, repetition_penalty: float | None = None,
                           presence_penalty: float | None = None, frequency_penalty: float | None = None,
                           window: int = 64) -> list[LogitsProcessor]:
    """The processors for these settings, in application order (None, 0 or 1.0 for repetition: off)."""
    return GenerationSettings(logit_bias=logit_bias or {},
                              repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty,
                              presence_penalty=presence_penalty or 0.0, frequency_penalty=frequency_penalty or 0.0,
                              penalty_window=window).logits_processors()
