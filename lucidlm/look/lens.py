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
from .figures import pyplot
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
            lines.append(f"{'layer ' + str(layer):>9}" + "".join(f"{guesses[t][0][:width - 1]:>{width}}" for t in shown))
        return "\n".join(lines)

    def heatmap(self):
        """Rank of the actual next token after every layer (dark: the top guess)."""
        L, P = self.next_rank.shape
        if P == 0:
            raise LucidError("the lens heatmap needs a text of at least two tokens (a next token to rank)")
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * P + 2), max(3.0, 0.22 * L + 1.2)))
        ranks = np.log10(1 + self.next_rank)
        image = ax.imshow(ranks, aspect="auto", cmap="magma_r", interpolation="nearest")
        ax.set_xticks(range(P), [f"{self.tokens[t]}→{self.tokens[t + 1]}" for t in range(P)], rotation=90, fontsize=7)
        ax.set_yticks(range(L), [f"layer {layer}" for layer in range(L)], fontsize=7)
        for layer in range(L):
            for t in range(P):
                if self.next_rank[layer, t] == 0:
                    ax.text(t, layer, "1", ha="center", va="center", color="black", fontsize=6)
        fig.colorbar(image, ax=ax, label="log10(1 + rank of the actual next token)")
        ax.set_title("logit lens: how soon each layer knows the next token (1 = top guess)")
        fig.tight_layout()
        return fig


@torch.no_grad()
def logit_lens(model, tokenizer, text, top: int = 3) -> LensView:
    ids = text_ids(model, tokenizer, text)
    with probe(model, hidden=True) as p:
        model(as_batch(model, ids))
    states = torch.cat(p.hidden[1:])  # (L, T, C): every block's output, embeddings left out
    logits = model.lm_head(model.final_norm(states)).float()  # (L, T, V)
    probs = logits.softmax(-1)
    best = torch.topk(probs, top, dim=-1)
    following = torch.tensor(ids[1:], device=logits.device)  # (T - 1,)
    target = logits[:, :-1].gather(-1, following.expand(logits.shape[0], -1)[..., None])  # (L, T - 1, 1)
    ranks = (logits[:, :-1] > target).sum(-1)  # how many tokens score higher than the actual next one
    guesses = [[labels(tokenizer, row) for row in layer] for layer in best.indices.tolist()]
    return LensView(labels(tokenizer, ids), guesses, best.values[..., 0].cpu().numpy(), ranks.cpu().numpy())
