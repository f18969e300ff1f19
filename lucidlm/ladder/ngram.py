"""Rung 1: n-gram language models, from counts alone (no gradient).

P(next | the n-1 tokens before it) is read off how often each n-gram occurs in the training text.
Counts alone give unseen n-grams probability 0 (an infinite loss), so every model is smoothed:

- "kneser-ney" (default): interpolated Kneser-Ney (Chen & Goodman 1998, eq. 13) with one discount
  D = 0.75 at every order. D is taken from every seen count and given to the next-lower order;
  the lower orders count in how many different contexts a token follows (so "Francisco" is
  unlikely after a new word, although frequent), and the lowest is interpolated with the uniform
  distribution, so every token of the vocabulary keeps some probability.
- "add-k": add k to every count (k = 1 is Laplace's rule).

At the start of a window, where fewer than n-1 tokens precede, the longest available history is
used, with that order's raw counts: a neural rung sees the same, shorter, context there.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

from ..errors import LucidError

SMOOTHINGS = ("kneser-ney", "add-k")


class NGramLM:
    def __init__(self, order: int, vocab_size: int, smoothing: str = "kneser-ney", discount: float = 0.75,
                 k: float = 1.0) -> None:
        if order < 1:
            raise LucidError(f"an n-gram model needs n >= 1 (got {order})")
        if smoothing not in SMOOTHINGS:
            raise LucidError(f"smoothing must be one of {', '.join(SMOOTHINGS)} (got {smoothing!r})")
        if not 0 < discount < 1 or k <= 0:
            raise LucidError("the discount must be in (0, 1) and k above 0")
        self.order, self.vocab_size, self.smoothing = order, vocab_size, smoothing
        self.discount, self.k = discount, k
        # raw[m][history] = {token: count} for histories of m - 1 tokens (m = 1..order)
        self.raw: list[dict[tuple, dict[int, int]]] = [{} for _ in range(order + 1)]
        # continuation[m][history] = {token: how many different tokens precede history + token}
        self.continuation: list[dict[tuple, dict[int, int]]] = [{} for _ in range(order + 1)]

    def fit(self, documents: Iterable[Sequence[int]]) -> "NGramLM":
        """Count every m-gram (m = 1..order) inside each document (none spans two)."""
        grams: list[Counter] = [Counter() for _ in range(self.order + 1)]
        for doc in documents:
            doc = [int(t) for t in doc]
            for m in range(1, self.order + 1):
                grams[m].update(zip(*(doc[i:] for i in range(m))))
        for m in range(1, self.order + 1):
            self.raw[m] = _by_history(grams[m].items())
            if m < self.order:  # the number of distinct one-token-longer grams ending in each m-gram
                left = Counter(gram[1:] for gram in grams[m + 1])
                self.continuation[m] = _by_history(left.items())
        if not self.raw[1]:
            raise LucidError("an n-gram model needs at least one token to count")
        return self

    @property
    def parameters(self) -> int:
        """How many counts the model keeps (its size, as a neural model's is its weights)."""
        return sum(len(f) for m in range(1, self.order + 1) for f in self.raw[m].values())

    def probability(self, history: Sequence[int], token: int) -> float:
        """P(token | history), from the last order-1 tokens of history."""
        history = tuple(history[len(history) - min(len(history), self.order - 1):])
        if self.smoothing == "add-k":
            counts = self.raw[len(history) + 1].get(history, {})
            return (counts.get(token, 0) + self.k) / (sum(counts.values()) + self.k * self.vocab_size)
        return self._kneser_ney(history, token, top=True)

    def _kneser_ney(self, history: tuple, token: int, top: bool) -> float:
        m = len(history) + 1
        below = 1.0 / self.vocab_size if m == 1 else self._kneser_ney(history[1:], token, top=False)
        table = self.raw[m] if top else self.continuation[m]
        followers = table.get(history)
        if not followers:  # an unseen history: all the mass goes to the lower order
            return below
        total = sum(followers.values())
        kept = max(followers.get(token, 0) - self.discount, 0.0) / total
        return kept + self.discount * len(followers) / total * below

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """P(every token | history), a (V,) array that sums to 1."""
        return np.array([self.probability(history, t) for t in range(self.vocab_size)])

    def window_loss(self, inputs: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
        """Summed negative log-likelihood (nats) and the number of tokens, over windows as the
        trainer cuts them: each target's history is the inputs up to it, inside its window."""
        total, count = 0.0, 0
        for row in range(inputs.shape[0]):
            ids = inputs[row].tolist()
            for t in np.flatnonzero(mask[row]).tolist():
                total -= np.log(self.probability(ids[max(0, t - self.order + 2):t + 1], int(targets[row, t])))
                count += 1
        return total, count


def _by_history(items: Iterable[tuple[tuple, int]]) -> dict[tuple, dict[int, int]]:
    table: dict[tuple, dict[int, int]] = defaultdict(dict)
    for gram, count in items:
        table[gram[:-1]][gram[-1]] = count
    return dict(table)
