"""The ladder's rungs, in the course's order: what each adds, and how its model is made.

Every neural rung takes its sizes (width, heads, context) from the baby GPT's config
(`shakespeare-char`), so the rungs differ by their ideas, not by size. The small rungs are plain
PyTorch modules with PyTorch's default initialisation and an untied LM head with a bias; the gpt
rung is the project's Transformer with the preset's own choices (weights drawn from N(0, 0.02), the
head tied to the embedding, no biases), so from block to gpt depth is not the only change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from ..config import Config
from ..errors import LucidError
from ..model import Transformer
from .attention_lm import AttentionLM
from .bag import BagOfContextLM
from .bigram import BigramLM
from .block_lm import BlockLM
from .ngram import SMOOTHINGS


@dataclass(frozen=True)
class Rung:
    name: str
    idea: str  # what this rung adds to the one before
    build: Callable[[Config], nn.Module] | None = None  # None: an n-gram, counted rather than trained
    order: int = 0  # n-grams: n
    smoothing: str = ""  # n-grams: see ngram.SMOOTHINGS


NEURAL = {
    "bigram": Rung("bigram", "next token from the current token's embedding",
                   lambda c: BigramLM(c.vocab_size, c.d_model)),
    "bag": Rung("bag", "uniform average of the context's embeddings",
                lambda c: BagOfContextLM(c.vocab_size, c.d_model, c.context_length)),
    "positions": Rung("positions", "the bag, with position embeddings added",
                      lambda c: BagOfContextLM(c.vocab_size, c.d_model, c.context_length, positions=True)),
    "attention": Rung("attention", "one causal head: a learned weighted average (Q, K, V)",
                      lambda c: AttentionLM(c.vocab_size, c.d_model, c.context_length, n_heads=1)),
    "multihead": Rung("multihead", "the same width split into heads that look at different things",
                      lambda c: AttentionLM(c.vocab_size, c.d_model, c.context_length, n_heads=c.n_heads)),
    "block": Rung("block", "one block: attention + feed-forward, layer norms, residuals",
                  lambda c: BlockLM(c.vocab_size, c.d_model, c.context_length, c.n_heads)),
    "gpt": Rung("gpt", "the baby GPT: a stack of blocks (the shakespeare-char preset)", Transformer),
}
DEFAULT_RUNGS = "ngram:1-5,bigram,bag,positions,attention,multihead,block,gpt"
MAX_ORDER = 9


def ngram_rung(order: int, smoothing: str = "kneser-ney") -> Rung:
    before = "no context" if order == 1 else "after the token before" if order == 2 else \
        f"after the {order - 1} tokens before"
    idea = f"counts of each token, {before}"
    if smoothing not in SMOOTHINGS:
        raise LucidError(f"smoothing must be one of {', '.join(SMOOTHINGS)} (got {smoothing!r})")
    named = {"kneser-ney": "Kneser-Ney", "add-k": "add-one"}[smoothing]
    return Rung(f"{order}-gram", f"{idea} ({named})", order=order, smoothing=smoothing)


def parse_rungs(text: str, smoothing: str = "kneser-ney") -> list[Rung]:
    """'ngram:1-5,bigram,gpt' -> the rungs, in the order given. ngram:N is one order, ngram:A-B
    a range; every n-gram is smoothed the same way."""
    rungs: list[Rung] = []
    for part in (p.strip() for p in text.split(",")):
        if part.startswith("ngram:"):
            low, dash, high = part[len("ngram:"):].partition("-")
            try:
                orders = range(int(low), int(high if dash else low) + 1)
            except ValueError:
                raise LucidError(f"--rungs: {part!r} should be ngram:N or ngram:A-B, e.g. ngram:1-5") from None
            if not orders or orders[0] < 1 or orders[-1] > MAX_ORDER:
                raise LucidError(f"--rungs: n-gram orders go from 1 to {MAX_ORDER} (got {part!r})")
            rungs.extend(ngram_rung(n, smoothing) for n in orders)
        elif part in NEURAL:
            rungs.append(NEURAL[part])
        else:
            raise LucidError(f"--rungs: unknown rung {part!r} (known: ngram:A-B, {', '.join(NEURAL)})")
    names = [r.name for r in rungs]
    if len(set(names)) != len(names):
        raise LucidError(f"--rungs names a rung twice: {text}")
    return rungs
