"""The simplest tokenizer: one id per character of a fixed alphabet (nanoGPT's shakespeare_char).

The alphabet is the sorted set of characters of the training text; a character outside it is an
error, not a silent substitution.
"""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import FormatError, LucidError
from .our_format import CHAR_FORMAT
from .units import UnitTokenizer


class CharTokenizer(UnitTokenizer):
    kind = "char"
    format = CHAR_FORMAT

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

    def token_bytes(self, token_id: int) -> bytes:
        return self.chars[token_id].encode("utf-8")

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        try:
            return "".join(self.chars[i] for i in ids)
        except IndexError:
            raise LucidError(f"a token id is outside the alphabet of {len(self.chars)}") from None

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def fields(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharTokenizer":
        chars = data.get("chars")
        if not isinstance(chars, str):
            raise FormatError(f"{data.get('origin') or 'tokenizer'}: a character tokenizer needs its 'chars' string")
        return cls(chars)
