"""Adding special tokens the Hugging Face way: {"cls_token": "<CLS>", "additional_special_tokens":
[...]} on any of our tokenizers, each of which knows how to make one text a special token."""

from __future__ import annotations

from typing import Any

from ..errors import LucidError

# The named kinds transformers' add_special_tokens takes; each sets the tokenizer's attribute.
SPECIAL_KINDS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
EXTRA_KIND = "additional_special_tokens"


def add_special_tokens(tokenizer, tokens: dict[str, Any], set_attributes: bool = True) -> int:
    """Make every text in `tokens` a special token of `tokenizer` (its `add_special(text)`), set
    the named kinds as attributes (unless told not to), and return how many new ids were made."""
    if not isinstance(tokens, dict):
        raise LucidError("add_special_tokens takes a dict such as {'pad_token': '<pad>'}")
    for key, value in tokens.items():
        if key not in SPECIAL_KINDS and key != EXTRA_KIND:
            raise LucidError(f"unknown special token kind {key!r} (known: {', '.join(SPECIAL_KINDS + (EXTRA_KIND,))})")
        for text in (value if key == EXTRA_KIND and isinstance(value, (list, tuple)) else [value]):
            if not isinstance(text, str) or not text:
                raise LucidError(f"a special token must be a non-empty string, got {text!r}")
    added = 0
    for key, value in tokens.items():
        for text in (value if key == EXTRA_KIND else [value]):
            added += tokenizer.add_special(text)
        if key != EXTRA_KIND and set_attributes:
            setattr(tokenizer, key, value)
    return added
