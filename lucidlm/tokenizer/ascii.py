"""ASCII: one id per code point 0-127, the character set of 1963 that needs no training.

A character outside it is an error that names it and where it is, so a student sees at once why
"Köche" cannot be written this way (the byte tokenizer can).
"""

from __future__ import annotations

from typing import Any

from ..errors import LucidError
from .our_format import ASCII_FORMAT
from .units import UnitTokenizer


class AsciiTokenizer(UnitTokenizer):
    kind = "ascii"
    format = ASCII_FORMAT

    @property
    def vocab_size(self) -> int:
        return 128

    def encode(self, text: str, allowed_special: Any = (), add_bos: bool = False) -> list[int]:
        ids = [ord(c) for c in text]
        if ids and max(ids) > 127:
            where = next(n for n, i in enumerate(ids) if i > 127)
            raise LucidError(f"{text[where]!r} (U+{ids[where]:04X}, at index {where} of the text) is not ASCII: "
                             f"this tokenizer knows code points 0-127 only (the bytes tokenizer writes any text)")
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < 128:
            raise LucidError(f"token id {token_id} is not an ASCII code point (0-127)")
        return bytes([token_id])
