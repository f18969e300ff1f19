"""GPT-2's printable stand-ins for bytes, used by tokenizer.json and GGUF vocabularies.

Byte-level vocabularies are stored as strings in which every byte is one printable character:
printable Latin-1 bytes stand for themselves and the rest (space, control bytes, ...) are shifted
to U+0100 and up, so a space becomes "Ġ" and a newline "Ċ" (Radford et al. 2019, encoder.py).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def byte_to_char() -> tuple[str, ...]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = [""] * 256
    shifted = 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return tuple(chars)


@lru_cache(maxsize=None)
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_to_char())}


def bytes_to_text(data: bytes) -> str:
    """b' hi' -> 'Ġhi'."""
    table = byte_to_char()
    return "".join(table[b] for b in data)


def text_to_bytes(text: str) -> bytes | None:
    """'Ġhi' -> b' hi'; None if a character is not a byte stand-in."""
    table = char_to_byte()
    try:
        return bytes(table[c] for c in text)
    except KeyError:
        return None
