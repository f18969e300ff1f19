"""The original byte-pair algorithm (Gage 1994), as a teaching step before the real tokenizer.

Count every adjacent pair, replace the most frequent one with a new symbol, repeat. Ties go to
the pair with the smallest symbol ids, so older symbols win, which reproduces Wikipedia's example:
"aaabdaaabac" -> aa=Z -> ab=Y -> ZY=X -> "XdXac". It recounts the whole text after every merge;
bpe.train_merges does the same job incrementally, fast enough for real corpora.
"""

from __future__ import annotations

from collections import Counter


def most_frequent_pair(ids: list[int]) -> tuple[int, int] | None:
    counts = Counter(zip(ids, ids[1:]))
    if not counts:
        return None
    return min(counts, key=lambda pair: (-counts[pair], pair))


def replace_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Every non-overlapping occurrence of `pair`, left to right, becomes `new_id`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BasicBPE:
    """Byte pair encoding over a whole text, without pre-splitting or special tokens."""

    def __init__(self) -> None:
        self.merges: list[tuple[int, int]] = []  # merge k creates symbol 256 + k

    def train(self, text: str, n_merges: int) -> "BasicBPE":
        ids = list(text.encode("utf-8"))
        self.merges = []
        for k in range(n_merges):
            pair = most_frequent_pair(ids)
            if pair is None:
                break
            self.merges.append(pair)
            ids = replace_pair(ids, pair, 256 + k)
        return self

    def encode(self, text: str) -> list[int]:
        ids = list(text.encode("utf-8"))
        for k, pair in enumerate(self.merges):  # the merges in the order they were learned
            ids = replace_pair(ids, pair, 256 + k)
        return ids

    def decode(self, ids: list[int]) -> str:
        vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            vocab.append(vocab[a] + vocab[b])
        return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
