"""Tokenizers without merges: one id per unit of text, the first rungs of the course's ladder.

UnitTokenizer holds what they share (no special tokens, no chat template, our file format); each
kind says what its unit is: a character of a fixed alphabet (char.py), an ASCII code point
(ascii.py), a UTF-8 byte (byte.py) or a word (word.py).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from ..errors import LucidError
from .files import write_ours
from .our_format import FORMAT_VERSION


class UnitTokenizer:
    kind = "units"
    format = ""  # our dict format's name, e.g. "lucidlm.char"
    special_tokens: dict[str, int] = {}
    chat_template = None
    bos_token = eos_token = pad_token = unk_token = None
    bos_token_id = eos_token_id = pad_token_id = None
    add_bos_token = False
    eos_token_ids: frozenset[int] = frozenset()

    # --- what each kind defines (a fixed vocabulary, such as bytes, needs only the first three) -------

    @classmethod
    def train(cls, text: str = "") -> "UnitTokenizer":
        """The tokenizer for this text: a fixed vocabulary has nothing to learn."""
        return cls()

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, allowed_special: Any = (), add_bos: bool = False) -> list[int]:
        raise NotImplementedError

    def token_bytes(self, token_id: int) -> bytes:
        raise NotImplementedError

    def fields(self) -> dict[str, Any]:
        """What our dict format stores besides the format's name and version."""
        return {}

    # --- shared ----------------------------------------------------------------------------------

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encode(text)

    def encode_batch(self, texts: Iterable[str], allowed_special: Any = ()) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def knows(self, text: str) -> bool:
        """Whether encode(text) works (a character tokenizer's alphabet may lack it)."""
        try:
            self.encode(text)
        except LucidError:
            return False
        return True

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def is_special(self, token_id: int) -> bool:
        return False

    def add_eos_token_ids(self, ids: Iterable[int]) -> None:
        pass

    def apply_chat_template(self, messages, add_generation_prompt: bool = False, tokenize: bool = True, **kwargs):
        """No template and no special tokens: the conversation is a plain transcript, one message
        per paragraph, which the model simply continues."""
        text = "".join(f"{m.get('content') or ''}\n\n" for m in messages)
        return self.encode(text) if tokenize else text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UnitTokenizer":
        return cls()

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "version": FORMAT_VERSION, **self.fields()}

    def save(self, directory: str | os.PathLike) -> None:
        write_ours(self, directory)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.format)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"
