"""Words: one id per word (or punctuation mark, or line break) of a vocabulary learned from text,
most frequent first; id 0 is <unk>, for any word the training text did not hold.

This is the tokenizer of the course's femto and pico GPTs, where each word's embedding is a
point in a plane. It is lossy on purpose: spaces are not tokens. A word's bytes carry one space
before it (a mark such as "." or a line break carries none), and decode drops the space that
would open a line, so "Emma is great.\nShe" comes back as it was written; other spacing does not.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

import regex

from ..errors import FormatError, LucidError
from .our_format import WORD_FORMAT
from .units import UnitTokenizer

WORD = regex.compile(r"[\p{L}\p{N}'’]+|\n|[^\s\p{L}\p{N}]")  # a word, a line break or one mark
UNKNOWN = "<unk>"
NO_SPACE_BEFORE = set(".,;:!?)]}'’\n")
LINE_OPENING_SPACE = regex.compile(r"(^|\n) ")


class WordTokenizer(UnitTokenizer):
    kind = "words"
    format = WORD_FORMAT
    unk_token, unk_token_id = UNKNOWN, 0

    def __init__(self, words: Iterable[str]) -> None:
        self.words = [UNKNOWN] + [w for w in dict.fromkeys(words) if w != UNKNOWN]
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def train(cls, text: str, max_words: int | None = None) -> "WordTokenizer":
        """The text's words, most frequent first (ties: first seen first), at most max_words of
        them besides <unk>."""
        counts = Counter(WORD.findall(text))
        if not counts:
            raise LucidError("the text has no words to learn a vocabulary from")
        return cls(w for w, _ in counts.most_common(max_words))

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str, allowed_special: Any = (), add_bos: bool = False) -> list[int]:
        return [self.ids.get(w, 0) for w in WORD.findall(text)]

    def knows(self, text: str) -> bool:
        return all(w in self.ids for w in WORD.findall(text))  # encode itself never fails: <unk>

    def token_bytes(self, token_id: int) -> bytes:
        word = self._word(token_id)
        return (word if word[0] in NO_SPACE_BEFORE else " " + word).encode("utf-8")

    def _word(self, token_id: int) -> str:
        if not 0 <= token_id < len(self.words):
            raise LucidError(f"token id {token_id} is outside the vocabulary of {len(self.words)} words")
        return self.words[token_id]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        text = b"".join(self.token_bytes(i) for i in ids).decode("utf-8")
        return LINE_OPENING_SPACE.sub(r"\1", text)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def fields(self) -> dict[str, Any]:
        return {"words": self.words}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordTokenizer":
        words = data.get("words")
        if not isinstance(words, list) or not words or words[0] != UNKNOWN or \
                not all(isinstance(w, str) and w for w in words):
            raise FormatError(f"{data.get('origin') or 'tokenizer'}: a word tokenizer needs its 'words' list, "
                              f"<unk> first")
        return cls(words[1:])
