"""Small files and text input, safely: JSON read with one clear error for every way it can fail;
text or bytes written beside the target and renamed into place, so a crash never leaves half a
file; text from standard input and the command line decoded as UTF-8 strictly (a wrong byte is an
error that names its offset, never a silently different text) or, by choice, with replacements."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import FormatError, LucidError

INPUT_ERRORS = ("strict", "replace")


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, object_pairs_hook=_unique_keys)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, a 5,000-digit number, nesting too deep
        raise FormatError(f"{path}: not valid JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object")
    return data


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key repeats would keep only its last value, silently: refuse it."""
    data = dict(pairs)
    if len(data) < len(pairs):
        seen = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {twice!r} appears twice in one object")
    return data


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


def decode_text(data: bytes, errors: str = "strict", what: str = "standard input") -> str:
    """UTF-8 bytes -> text. errors="strict": a byte that is not UTF-8 is a one-line error;
    "replace": it becomes U+FFFD."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise LucidError(f"{what} is not UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} "
                         f"(pass --errors replace to read it with U+FFFD in its place)") from None


def read_stdin(errors: str = "strict") -> str:
    return decode_text(sys.stdin.buffer.read(), errors)


def argument_text(text: str, errors: str = "strict", what: str = "the argument") -> str:
    """A command-line argument as the user's bytes meant it: Python hands non-UTF-8 bytes over as
    lone surrogates, which would otherwise reach the tokenizer as different bytes."""
    return decode_text(text.encode("utf-8", errors="surrogateescape"), errors, what)


def text_or_stdin(text: str | None, errors: str, what: str) -> str:
    """An argument's text, or standard input's when the argument is absent (and not a terminal)."""
    if text is not None:
        return argument_text(text, errors, what)
    if sys.stdin.isatty():
        raise LucidError(f"give {what}, or pipe text in")
    return read_stdin(errors)


def add_input_errors_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--errors", choices=INPUT_ERRORS, default="strict",
                        help="input that is not UTF-8: stop with an error (default) or replace the bad bytes")
