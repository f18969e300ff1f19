"""Token embeddings in a plane: PCA to 2-D (written here with torch.linalg.svd), or the raw plane
when the model is 2 wide (the course's femto and pico GPTs).

A word that the tokenizer splits into several tokens is placed at the mean of their vectors (and
labelled so). Without a list of tokens, the plot takes the N most frequent tokens of a text when
one is given, else the first N tokens a BPE learned (its earliest merges are its most frequent
pairs) or every character of a character tokenizer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import LucidError
from ..tokenizer import UnitTokenizer
from .figures import new_figure
from .tokens import labels


@dataclass
class EmbeddingView:
    labels: list[str]
    points: np.ndarray  # (N, 2)
    axes: tuple[str, str]  # what the two coordinates are
    explained: tuple[float, float] | None  # the share of variance each principal component keeps

    def scatter(self):
        fig = new_figure(figsize=(7, 6), layout="tight")
        ax = fig.subplots()
        ax.scatter(self.points[:, 0], self.points[:, 1], s=14, color="#2456a6")
        for (x, y), label in zip(self.points, self.labels):
            ax.annotate(label, (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(self.axes[0])
        ax.set_ylabel(self.axes[1])
        ax.axhline(0, color="#ccc", linewidth=0.8, zorder=0)
        ax.axvline(0, color="#ccc", linewidth=0.8, zorder=0)
        ax.set_title(f"token embeddings ({len(self.labels)} tokens)")
        return fig

    def table(self) -> str:
        lines = [f"{'token':<16} {self.axes[0]:>12} {self.axes[1]:>12}"]
        lines += [f"{label[:16]:<16} {x:>12.4f} {y:>12.4f}" for label, (x, y) in zip(self.labels, self.points)]
        return "\n".join(lines)


def pca_2d(vectors: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
    """(N, C) -> (N, 2) coordinates on the two directions of greatest variance, and the share of
    the variance each keeps."""
    centered = vectors - vectors.mean(dim=0, keepdim=True)
    _, singular, directions = torch.linalg.svd(centered, full_matrices=False)  # directions: (k, C)
    variance = singular ** 2
    shares = (variance[:2] / variance.sum().clamp(min=1e-12)).tolist() + [0.0, 0.0]
    return centered @ directions[:2].T, (shares[0], shares[1])


def _visible(piece: bytes) -> bool:
    """Not a control code or a lone byte of a longer character (ASCII and byte ids start with 32 of them)."""
    try:
        return piece.decode("utf-8").strip(" ").isprintable() and bool(piece.strip())
    except UnicodeDecodeError:
        return False


def _chosen(tokenizer, words: Sequence[str] | None, text: str | None, count: int) -> list[tuple[str, list[int]]]:
    """(label, token ids) for every point to plot."""
    if words:
        out = []
        for word in words:
            ids = tokenizer.encode(word)
            if not ids:
                raise LucidError(f"{word!r} has no tokens")
            out.append((word if len(ids) == 1 else f"{word} ({len(ids)} tokens)", ids))
        return out
    if text is not None:
        ids = [token for token, _ in Counter(tokenizer.encode(text)).most_common(count)]
    elif isinstance(tokenizer, UnitTokenizer):  # every unit is a token: the first visible ones (words: the most frequent)
        ids = [i for i in range(tokenizer.vocab_size) if _visible(tokenizer.token_bytes(i))][:count]
    else:
        first_merged = 256 if tokenizer.vocab_size > 256 + count else 0
        ids = [i for i in range(first_merged, tokenizer.vocab_size) if not tokenizer.is_special(i)][:count]
    return [(label, [i]) for label, i in zip(labels(tokenizer, ids), ids)]


@torch.no_grad()
def embeddings_2d(model, tokenizer, tokens: Sequence[str] | None = None, text: str | None = None,
                  count: int = 50) -> EmbeddingView:
    if tokenizer is None:
        raise LucidError("this model has no tokenizer, so its tokens have no names to plot")
    chosen = _chosen(tokenizer, tokens, text, count)
    if len(chosen) < 2:
        raise LucidError("a plot needs at least two tokens")
    table = model.tok_emb.weight.float()  # (V, C)
    for _, ids in chosen:
        if max(ids) >= table.shape[0]:
            raise LucidError(f"token id {max(ids)} is outside the model's {table.shape[0]} embeddings")
    vectors = torch.stack([table[ids].mean(dim=0) for _, ids in chosen]).cpu()  # (N, C)
    names = [label for label, _ in chosen]
    if vectors.shape[1] == 2:
        return EmbeddingView(names, vectors.numpy(), ("dimension 0", "dimension 1"), None)
    points, explained = pca_2d(vectors)
    return EmbeddingView(names, points.numpy(), (f"PC1 ({explained[0]:.0%} of the variance)",
                                                 f"PC2 ({explained[1]:.0%})"), explained)
