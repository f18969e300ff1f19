"""Baselines for text classification, so a fine-tuned model's accuracy means something: the majority
class, and multinomial naive Bayes on word counts with add-one smoothing (Manning, Raghavan and
Schuetze, "Introduction to Information Retrieval", ch. 13), written here in a few lines.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from .labelled import Labelled

WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def majority_accuracy(train: list[Labelled], test: list[Labelled]) -> float:
    """Always answer the label most frequent in training."""
    majority = Counter(r.label for r in train).most_common(1)[0][0]
    return sum(r.label == majority for r in test) / len(test)


class NaiveBayes:
    """log P(label) + sum over the text's words of log P(word | label), P(word | label) from the
    training texts' counts plus one (words never seen in training are skipped)."""

    def __init__(self, train: list[Labelled], n_labels: int) -> None:
        counts = [Counter() for _ in range(n_labels)]
        docs = Counter(r.label for r in train)
        for r in train:
            counts[r.label].update(words(r.text))
        self.vocab = set().union(*counts)
        self.log_prior = [math.log(docs[k] / len(train)) if docs[k] else -math.inf for k in range(n_labels)]
        totals = [sum(c.values()) + len(self.vocab) for c in counts]
        self.counts, self.totals = counts, totals

    def predict(self, text: str) -> int:
        seen = [w for w in words(text) if w in self.vocab]
        scores = [prior + sum(math.log((self.counts[k][w] + 1) / self.totals[k]) for w in seen)
                  for k, prior in enumerate(self.log_prior)]
        return max(range(len(scores)), key=scores.__getitem__)

    def accuracy(self, test: list[Labelled]) -> float:
        return sum(self.predict(r.text) == r.label for r in test) / len(test)
