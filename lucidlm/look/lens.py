"""The logit lens (nostalgebraist 2020): read every layer's hidden state as if it were the last.

Each block's output goes through the final norm and the LM head, as the real output does, so a
table shows the model's best guess for the next token after every layer, at every position; a
heatmap shows the rank the actual next token has after each layer (0: it is the top guess).
The hidden states come from one probed forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LucidError
from ..model import probe
from .figures import colormap, new_figure
from .tokens import as_batch, labels, text_ids


@dataclass
class LensView:
    tokens: list[str]  # the text's tokens
    top: list[list[list[str]]]  # [layer][position] -> the top guesses, best first
    top_probability: np.ndarray  # (L, T) the best guess's probability
    next_rank: np.ndarray  # (L, T - 1) rank of the actual next token after each layer

    def table(self, width: int = 10, last: int = 8) -> str:
        """Rows are layers (the last is the model's output), columns the last positions."""
        T = len(self.tokens)
        shown = range(max(0, T - last), T)
        lines = [("" if shown[0] == 0 else f"… the first {shown[0]} positions are left out\n") +
                 "the best guess for the next token after each layer, at each position"]
        lines.append(f"{'':>9}" + "".join(f"{self.tokens[t][:width - 1]:>{width}}" for t in shown))
        for layer, guesses in enumerate(self.top):
            row = "".join(f"{guesses[t][0][:width - 1]:>{width}}" for t in shown)
            lines.append(f"{'layer ' + str(layer):>9}{row}")
        return "\n".join(lines)

    def heatmap(self, last: int = 80):
        """Rank of the actual next token after every layer (dark: far down; 1: the top guess),
        for the last `last` positions."""
        L, P = self.next_rank.shape
        if P == 0:
            raise LucidError("the lens heatmap needs a text of at least two tokens (a next token to rank)")
        first = max(0, P - last)
        shown = range(first, P)
        fig = new_figure(figsize=(max(5.0, 0.45 * len(shown) + 2), max(3.0, 0.22 * L + 1.2)), layout="tight")
        ax = fig.subplots()
        image = ax.imshow(np.log10(1 + self.next_rank[:, first:]), aspect="auto", cmap=colormap("magma_r"),
                          interpolation="nearest")
        ax.set_xticks(range(len(shown)), [f"{self.tokens[t]}→{self.tokens[t + 1]}" for t in shown], rotation=90,
                      fontsize=7)
        ax.set_yticks(range(L), [f"layer {layer}" for layer in range(L)], fontsize=7)
        for layer in range(L):
            for column, t in enumerate(shown):
                if self.next_rank[layer, t] == 0:
                    ax.text(column, layer, "1", ha="center", va="center", color="black", fontsize=6)
        fig.colorbar(image, ax=ax, label="log10(1 + rank of the actual next token)")
        cut = f", the last {len(shown)} of {P} positions" if first else ""
        ax.set_title(f"logit lens: how soon each layer knows the next token (1 = top guess{cut})")
        return fig


@torch.no_grad()
def logit_lens(model, tokenizer, text, top: int = 3) -> LensView:
    ids = text_ids(model, tokenizer, text)
    with probe(model, hidden=True) as p:
        model(as_batch(model, ids))
    following = torch.tensor(ids[1:], device=model.device)  # (T - 1,) the actual next tokens
    guesses, best_probability, ranks = [], [], []
    for state in p.hidden[1:]:  # each block's output (1, T, C), one layer at a time: (T, V) logits, not (L, T, V)
        logits = model.lm_head(model.final_norm(state))[0].float()  # (T, V)
        best = torch.topk(logits, top, dim=-1)
        guesses.append([labels(tokenizer, row) for row in best.indices.tolist()])
        best_probability.append((best.values[:, 0] - logits.logsumexp(-1)).exp())
        target = logits[:-1].gather(-1, following[:, None])  # (T - 1, 1)
        ranks.append((logits[:-1] > target).sum(-1))  # how many tokens score higher than the actual next one
    return LensView(labels(tokenizer, ids), guesses, torch.stack(best_probability).cpu().numpy(),
                    torch.stack(ranks).cpu().numpy())
