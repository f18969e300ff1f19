"""The text every view starts from: its token ids (checked against the model) and their labels.

Labels are the visible pieces `lucidlm tokenize` shows: a space is ·, a newline ↵, and a byte that
is not a whole UTF-8 character on its own is <0xE2>, so a split character is never a blank.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import LucidError
from ..generation.text import prompt_ids
from ..tokenizer.commands import visible_piece


def text_ids(model, tokenizer, text: str | Sequence[int]) -> list[int]:
    """The ids of `text` as the model reads it (special-token strings included), or a clear error."""
    if tokenizer is None and isinstance(text, str):
        raise LucidError("this model has no tokenizer, so it cannot read text")
    ids = prompt_ids(tokenizer, text)
    context = model.config.context_length
    if len(ids) > context:
        raise LucidError(f"the text has {len(ids)} tokens; the model's context is {context}")
    return ids


def labels(tokenizer, ids: Sequence[int]) -> list[str]:
    if tokenizer is None:
        return [str(i) for i in ids]
    return [visible_piece(tokenizer.token_bytes(i)) for i in ids]


def as_batch(model, ids: Sequence[int]) -> torch.Tensor:
    return torch.tensor([list(ids)], dtype=torch.long, device=model.device)  # (1, T)
