"""Byte-level BPE: merging one piece by rank, and learning merges from a corpus incrementally.

Encoding (Sennrich et al. 2016; GPT-2): a piece starts as its bytes' tokens; repeatedly the
adjacent pair with the lowest rank is merged (the leftmost on ties) until no pair has a rank.
Training keeps pair counts and, for each pair, the words it occurs in; a merge only revisits those
words, so a 4k vocabulary on a megabyte of text takes seconds, not the hours a recount would.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import Callable

from .basic_bpe import replace_pair

NO_RANK = 1 << 62
HEAP_FROM = 16  # symbols in a piece above which the heap beats rescanning (measured on SmolLM2, real text)


def merge_piece(ids: list[int], ranks: dict[tuple[int, int], int], results: list[int]) -> list[int]:
    """Apply the merges to one piece's token ids, in rank order (the leftmost pair first on ties).
    `ranks[pair]` orders the merges; `results[rank]` is the token that merge makes.

    The plain way rescans the piece after every merge: quadratic, and the fastest for the short
    pieces real text is made of. Long pieces (a run of 100,000 '=' is one piece) take the heap."""
    if len(ids) > HEAP_FROM:
        return merge_piece_heap(ids, ranks, results)
    get = ranks.get
    while len(ids) > 1:
        best_rank, best_i = NO_RANK, -1
        for i in range(len(ids) - 1):
            rank = get((ids[i], ids[i + 1]), NO_RANK)
            if rank < best_rank:
                best_rank, best_i = rank, i
        if best_i < 0:
            break
        ids[best_i:best_i + 2] = [results[best_rank]]
    return ids


def merge_piece_heap(ids: list[int], ranks: dict[tuple[int, int], int], results: list[int]) -> list[int]:
    """The same merges in O(n log n): the symbols form a linked list, and a heap holds every
    adjacent pair that has a rank, ordered by (rank, position). A popped pair whose symbols have
    changed since it was pushed is stale and skipped (as tiktoken and `tokenizers` do)."""
    n = len(ids)
    tokens = list(ids)
    after = list(range(1, n + 1))  # the next live symbol (n: none)
    before = list(range(-1, n - 1))  # the previous live symbol (-1: none)
    get = ranks.get
    heap = [(rank, i, tokens[i], tokens[i + 1]) for i in range(n - 1)
            if (rank := get((tokens[i], tokens[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        rank, i, left, right = heapq.heappop(heap)
        j = after[i]
        if j >= n or tokens[i] != left or tokens[j] != right or before[j] != i:
            continue  # stale: one of its symbols was merged into something else
        tokens[i] = results[rank]  # i absorbs j
        tokens[j] = -1
        after[i] = after[j]
        if after[j] < n:
            before[after[j]] = i
        for a, b in ((before[i], i), (i, after[i])):
            if a >= 0 and b < n and (pair_rank := get((tokens[a], tokens[b]))) is not None:
                heapq.heappush(heap, (pair_rank, a, tokens[a], tokens[b]))
    return [t for t in tokens if t != -1]


def merge_below(ids: list[int], ranks: dict[tuple[int, int], int], results: list[int], below: int) -> list[int]:
    """BPE with only the merges ranked below `below`, stopping at two parts: under tiktoken's
    "ranks" rule, the two tokens whose merge makes the token of rank `below` from `ids`, its bytes."""
    while len(ids) > 2:
        best, best_i = below, -1
        for i in range(len(ids) - 1):
            rank = ranks.get((ids[i], ids[i + 1]), below)
            if rank < best:
                best, best_i = rank, i
        if best_i < 0:
            break
        ids = ids[:best_i] + [results[best]] + ids[best_i + 2:]
    return ids


def train_merges(word_counts: dict[bytes, int], n_merges: int, first_id: int = 256,
                 on_merge: Callable[[int], None] | None = None) -> list[tuple[int, int]]:
    """Learn up to n_merges merges over words (byte strings) with their counts.

    Merge k makes token first_id + k from the pair with the highest count; ties go to the smallest
    pair of ids. Returns the pairs in the order learned.
    """
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> indices of words with it
    for index, (word, count) in enumerate(zip(words, counts)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += count
            where[pair].add(index)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)  # lazy: stale entries are skipped when popped

    merges: list[tuple[int, int]] = []
    for k in range(n_merges):
        while heap and pair_counts.get(heap[0][1], 0) != -heap[0][0]:
            heapq.heappop(heap)
        if not heap or -heap[0][0] <= 0:
            break
        _, (a, b) = heapq.heappop(heap)
        new_id = first_id + k
        merges.append((a, b))
        touched = set()
        for index in where.pop((a, b)):
            word, count = words[index], counts[index]
            new_word = replace_pair(word, (a, b), new_id)
            if len(new_word) == len(word):
                continue  # the pair left this word in an earlier merge
            # Take the word's old pairs out and put its new pairs in; unchanged pairs net to zero.
            for pair in zip(word, word[1:]):
                pair_counts[pair] -= count
                touched.add(pair)
            for pair in zip(new_word, new_word[1:]):
                pair_counts[pair] += count
                where[pair].add(index)
                touched.add(pair)
            words[index] = new_word
        del pair_counts[(a, b)]
        for pair in touched:
            count = pair_counts.get(pair, 0)
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            elif pair in pair_counts:
                del pair_counts[pair]
        if on_merge is not None:
            on_merge(k)
    return merges
