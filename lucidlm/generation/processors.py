"""Logits processors: adjust the model's logits from what has been generated, before sampling.

- repetition penalty (Keskar et al. 2019, CTRL): a seen token's logit is divided by the penalty
  when positive and multiplied when negative;
- presence and frequency penalties (OpenAI's API): subtract a constant once a token has appeared,
  and a constant per appearance;
- logit bias: add a fixed amount to chosen tokens.
Penalties look at the last `window` tokens, so the cost per token does not grow with the text.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import LucidError

LogitsProcessor = Callable[[Sequence[int], torch.Tensor], torch.Tensor]  # (tokens, logits (V,)) -> logits


def repetition_processor(penalty: float, window: int = 64) -> LogitsProcessor:
    def process(tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if not tokens:
            return logits
        seen = torch.tensor(sorted(set(tokens[-window:])), dtype=torch.long, device=logits.device)
        chosen = logits[..., seen]
        logits = logits.clone()
        logits[..., seen] = torch.where(chosen > 0, chosen / penalty, chosen * penalty)
        return logits

    return process


def presence_frequency_processor(presence: float = 0.0, frequency: float = 0.0, window: int = 64) -> LogitsProcessor:
    def process(tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if not tokens:
            return logits
        recent = torch.tensor(list(tokens[-window:]), dtype=torch.long, device=logits.device)
        counts = torch.bincount(recent, minlength=logits.shape[-1])[: logits.shape[-1]].to(logits.dtype)
        return logits - presence * (counts > 0).to(logits.dtype) - frequency * counts

    return process


def logit_bias_processor(bias: dict[int, float]) -> LogitsProcessor:
    ids = torch.tensor(list(bias.keys()), dtype=torch.long)
    values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def process(tokens: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        if int(ids.max()) >= logits.shape[-1] or int(ids.min()) < 0:
            raise LucidError(f"logit bias names a token outside the vocabulary of {logits.shape[-1]}")
        logits = logits.clone()
        logits[..., ids.to(logits.device)] += values.to(logits.device, logits.dtype)
        return logits

    return process


def processor_chain(logit_bias: dict[int, float], repetition_penalty: float, presence_penalty: float,
                    frequency_penalty: float, window: int) -> list[LogitsProcessor]:
    """The processors for these (checked) settings, in application order; a repetition penalty of
    1 and zero presence/frequency penalties are off."""
    processors: list[LogitsProcessor] = []
    if logit_bias:
        processors.append(logit_bias_processor(logit_bias))
    if repetition_penalty != 1.0:
        processors.append(repetition_processor(repetition_penalty, window))
    if presence_penalty or frequency_penalty:
        processors.append(presence_frequency_processor(presence_penalty, frequency_penalty, window))
    return processors
