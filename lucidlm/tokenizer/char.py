"""The simplest tokenizer: one id per character of a fixed alphabet (nanoGPT's shakespeare_char).

The alphabet is the sorted set of characters of the training text; a character outside it is an
error, not a silent substitution.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ..errors import FormatError, LucidError
from .files import write_ours
from .our_format import CHAR_FORMAT, FORMAT_VERSION


class CharTokenizer:
    kind = "char"
    special_tokens: dict[str, int] = {}
    chat_template = None
    bos_token = eos_token = pad_token = unk_token = None
    bos_token_id = eos_token_id = pad_token_id = None
    add_bos_token = False
    eos_token_ids: set[int] = set()

    def __init__(self, chars: str | Iterable[str]) -> None:
        self.chars = "".join(sorted(set(chars)))
        if not self.chars:
            raise LucidError("a character tokenizer needs at least one character")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, allowed_special: Any = (), add_bos: bool = False) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as exc:
            raise LucidError(f"character {exc.args[0]!r} is not in this tokenizer's alphabet") from None

    encode_ordinary = encode

    def encode_batch(self, texts: Iterable[str], allowed_special: Any = ()) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[token_id].encode("utf-8")

    def is_special(self, token_id: int) -> bool:
        return False

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        try:
            return "".join(self.chars[i] for i in ids)
        except IndexError:
            raise LucidError(f"a token id is outside the alphabet of {len(self.chars)}") from None

    def add_eos_token_ids(self, ids: Iterable[int]) -> None:
        pass

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = True, **kwargs):
        """No template and no special tokens: the conversation is a plain transcript, one message
        per paragraph, which the model simply continues."""
        text = "".join(f"{m.get('content') or ''}\n\n" for m in messages)
        return self.encode(text) if tokenize else text

    def to_dict(self) -> dict[str, Any]:
        return {"format": CHAR_FORMAT, "version": FORMAT_VERSION, "chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise FormatError(f"{data.get('origin') or 'tokenizer'}: a character tokenizer needs its 'chars' string")
        return cls(chars)

    def save(self, directory: str | os.PathLike) -> None:
        write_ours(self, directory)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"
