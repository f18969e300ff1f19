"""Learning a WordPiece vocabulary from a corpus.

Words are spelled in symbols: the first character as itself, every later one as "##c". Training
merges adjacent symbols, one pair at a time, choosing by one of two scores:
- "frequency": the pair seen most often, as BPE does. This is how `tokenizers`' WordPieceTrainer
  (and so most BERT vocabularies made today) learns, and it gives whole common words.
- "likelihood": score(a, b) = count(a b) / (count(a) * count(b)), how much more often the two
  occur together than chance would have them (Schuster & Nakajima 2012, as the Hugging Face
  course teaches it). Two rare symbols that always go together win over two frequent ones that
  merely meet often, so rare words are spelled whole long before common words are.

Likelihood scores rise when a merge takes counts away from its symbols, so a lazy heap is not
enough on its own: after a merge every pair that shares a symbol whose count changed is pushed
again with its new score. Popped entries whose score is no longer current are skipped.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Callable, Iterable

from ..errors import LucidError
from .basic_bpe import replace_pair

SCORES = ("frequency", "likelihood")


def spell(word: str, prefix: str) -> list[str]:
    """A word as its starting symbols: "cat" -> ["c", "##a", "##t"]."""
    return [word[0]] + [prefix + ch for ch in word[1:]]


def joined(a: str, b: str, prefix: str) -> str:
    """The symbol two adjacent symbols make: "c" + "##a" -> "ca"; b always continues a word."""
    return a + b[len(prefix):]


def train_wordpiece_vocab(word_counts: dict[str, int], vocab_size: int, specials: Iterable[str],
                          prefix: str = "##", min_frequency: int = 1, score: str = "frequency",
                          on_merge: Callable[[int], None] | None = None) -> list[str]:
    """The vocabulary (id order): the special tokens, the alphabet (sorted; the most frequent
    symbols when it does not all fit), then each merge's new symbol in the order learned. Pairs
    seen fewer than min_frequency times are never merged. Equal scores go to the smaller pair of ids."""
    if score not in SCORES:
        raise LucidError(f"unknown WordPiece score {score!r} (known: {', '.join(SCORES)})")
    specials = list(specials)
    symbol_totals: Counter[str] = Counter()
    for word, count in word_counts.items():
        for symbol in spell(word, prefix):
            symbol_totals[symbol] += count
    room = vocab_size - len(specials)
    if room < 1:
        raise LucidError(f"vocab size {vocab_size} leaves no room beside {len(specials)} special tokens")
    # Ties in frequency keep the smaller symbol, so the choice does not depend on input order.
    kept = sorted(sorted(symbol_totals, key=lambda s: (-symbol_totals[s], s))[:room])
    vocab = specials + [s for s in kept if s not in specials]
    index = {s: i for i, s in enumerate(vocab)}
    # Words with a symbol left out of the alphabet encode as [UNK] whatever is merged: not counted.
    words = [[index[s] for s in spell(w, prefix)] for w in word_counts if all(s in index for s in spell(w, prefix))]
    counts = [word_counts[w] for w in word_counts if all(s in index for s in spell(w, prefix))]

    symbol_count: dict[int, int] = defaultdict(int)
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words that hold it
    partners: dict[int, set[tuple[int, int]]] = defaultdict(set)  # symbol -> pairs it is part of

    def add(n: int, word: list[int], count: int) -> list[tuple[int, int]]:
        """Count word n (count times); returns its pairs."""
        for symbol in word:
            symbol_count[symbol] += count
        pairs = list(zip(word, word[1:]))
        for pair in pairs:
            pair_count[pair] += count
            where[pair].add(n)
            partners[pair[0]].add(pair)
            partners[pair[1]].add(pair)
        return pairs

    for n, (word, count) in enumerate(zip(words, counts)):
        add(n, word, count)

    def likelihood(pair: tuple[int, int]) -> float:
        return pair_count[pair] / (symbol_count[pair[0]] * symbol_count[pair[1]])

    score_of = likelihood if score == "likelihood" else pair_count.__getitem__
    heap = [(-score_of(pair), pair) for pair in pair_count]
    heapq.heapify(heap)
    merges = 0
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) < max(min_frequency, 1) or -negative != score_of(pair):
            continue  # stale: the pair is gone or its score moved (a fresh entry was pushed)
        a, b = pair
        text = joined(vocab[a], vocab[b], prefix)
        if text in index:
            new = index[text]  # another pair already made this symbol: the two spellings share it
        else:
            new = index[text] = len(vocab)
            vocab.append(text)
        changed_symbols, changed_pairs = {a, b, new}, set()
        for n in where.pop(pair):
            word, count = words[n], counts[n]
            merged = replace_pair(word, pair, new)
            if len(merged) == len(word):
                continue
            for symbol in word:
                symbol_count[symbol] -= count
            for old in zip(word, word[1:]):
                pair_count[old] -= count
                changed_pairs.add(old)
            changed_pairs.update(add(n, merged, count))
            words[n] = merged
        if score == "likelihood":  # the counts of a, b and the new symbol moved: so did their pairs' scores
            for symbol in changed_symbols:
                changed_pairs |= partners[symbol]
        for other in changed_pairs:
            if pair_count.get(other, 0) > 0:
                heapq.heappush(heap, (-score_of(other), other))
            else:
                pair_count.pop(other, None)
                where.pop(other, None)
                partners[other[0]].discard(other)
                partners[other[1]].discard(other)
        merges += 1
        if on_merge is not None:
            on_merge(len(vocab))
    return vocab
