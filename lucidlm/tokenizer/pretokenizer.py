"""Pre-tokenization: cut text into pieces before BPE, so merges never cross a piece boundary.

A pre-tokenizer is data: a list of regexes, each applied in turn to every piece the previous one
left ("isolated" splitting: the matches and the text between them both become pieces). The shipped
patterns are GPT-2's, GPT-4's (cl100k), Llama 3's and Qwen2's; SmolLM2 first isolates every digit
and then applies GPT-2's pattern. Regexes need the `regex` module for \\p{L} and friends.
"""

from __future__ import annotations

from functools import lru_cache

import regex

from ..errors import FormatError

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SINGLE_DIGIT = r"\p{N}"

# Named pre-tokenizers: our names plus llama.cpp's `tokenizer.ggml.pre` names for the same thing.
NAMED = {
    "gpt2": (GPT2_PATTERN,),
    "gpt4": (GPT4_PATTERN,),
    "llama3": (LLAMA3_PATTERN,),
    "qwen2": (QWEN2_PATTERN,),
    "smollm": (SINGLE_DIGIT, GPT2_PATTERN),
    "none": (),
}
ALIASES = {"gpt-2": "gpt2", "cl100k": "gpt4", "cl100k_base": "gpt4", "llama-bpe": "llama3", "llama-3": "llama3"}


@lru_cache(maxsize=64)
def _splitter(pattern: str):
    compiled = regex.compile(pattern)
    if compiled.groups == 0:
        # One capturing group around the whole pattern: split() then returns gaps and matches.
        return regex.compile(f"({pattern})").split
    return lambda text: _split_with_finditer(compiled, text)


def _split_with_finditer(compiled, text: str) -> list[str]:
    out, last = [], 0
    for match in compiled.finditer(text):
        start, end = match.span()
        if start > last:
            out.append(text[last:start])
        out.append(text[start:end])
        last = end
    if last < len(text):
        out.append(text[last:])
    return out


class PreTokenizer:
    def __init__(self, steps: tuple[str, ...] | list[str], name: str | None = None) -> None:
        self.steps = tuple(steps)
        self.name = name
        try:
            self._splits = [_splitter(p) for p in self.steps]
        except regex.error as exc:
            raise FormatError(f"invalid pre-tokenizer regex: {exc}") from None

    @classmethod
    def named(cls, name: str) -> "PreTokenizer":
        key = ALIASES.get(name, name)
        if key not in NAMED:
            raise FormatError(f"unknown pre-tokenizer {name!r} (known: {', '.join(sorted({*NAMED, *ALIASES}))})")
        return cls(NAMED[key], key)

    def split(self, text: str) -> list[str]:
        if not self._splits:
            return [text] if text else []
        pieces = [p for p in self._splits[0](text) if p]
        for split in self._splits[1:]:
            pieces = [q for p in pieces for q in split(p) if q]
        return pieces

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": list(self.steps)}

    @classmethod
    def from_dict(cls, data: dict) -> "PreTokenizer":
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or \
                not all(isinstance(s, str) for s in data["steps"]):
            raise FormatError("pre_tokenizer must be {'name': ..., 'steps': [regex, ...]}")
        return cls(data["steps"], data.get("name"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PreTokenizer) and other.steps == self.steps

    def __repr__(self) -> str:
        return f"PreTokenizer({self.name or list(self.steps)!r})"
