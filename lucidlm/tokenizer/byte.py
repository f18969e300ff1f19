"""Bytes: one id per UTF-8 byte (0-255). Any text can be written, at the price of length: "ö" is
two tokens, a CJK character three. Byte-level BPE starts from exactly these 256 tokens."""

from __future__ import annotations

from typing import Any, Iterable

from ..errors import LucidError
from .our_format import BYTE_FORMAT
from .units import UnitTokenizer


class ByteTokenizer(UnitTokenizer):
    kind = "bytes"
    format = BYTE_FORMAT

    @property
    def vocab_size(self) -> int:
        return 256

    def encode(self, text: str, allowed_special: Any = (), add_bos: bool = False) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < 256:
            raise LucidError(f"token id {token_id} is not a byte (0-255)")
        return bytes([token_id])

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        try:
            return bytes(ids)
        except ValueError:
            raise LucidError("a token id is not a byte (0-255)") from None
