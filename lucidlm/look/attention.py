"""Attention views: which earlier tokens each token looks at, per layer and head.

`attention(model, tokenizer, text, layers=[3])` runs the model once with a probe on the chosen
layers (the others keep the fused kernel) and returns an AttentionView: the weights (L, H, T, T)
of those layers, rows = queries and columns = keys; `table` prints one head as the course's
slides do, `heatmap` draws a layer's heads, `model_view` every layer and head, `html` writes the
explorer page. Cells the mask hides (the future, beyond a sliding window) show as masked, not as
0.00. In a GQA model, query heads share key/value heads: the views say which.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ..errors import LucidError
from ..model import probe
from ..model.mask import attention_mask
from .explorer import write_explorer
from .figures import colormap, new_figure, save_figure
from .tokens import as_batch, labels, text_ids

MASKED = "–"  # not "·", which is how a token's space is shown


@dataclass
class AttentionView:
    weights: np.ndarray  # (L, H, T, T) for the layers in `layers`, rows = queries
    visible: np.ndarray  # (L, T, T) bool: False where the mask hides a key from a query
    layers: list[int]  # the model's layer index of each entry of `weights`
    tokens: list[str]  # the visible label of each token
    n_kv_heads: int
    text: str = ""  # what was read, for titles

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def index(self, layer: int) -> int:
        if layer not in self.layers:
            raise_missing("layer", layer, self.layers)
        return self.layers.index(layer)

    def kv_head(self, head: int) -> int:
        """The key/value head this query head reads (GQA: n_heads / n_kv_heads query heads share one)."""
        return head // (self.n_heads // self.n_kv_heads)

    def head_title(self, layer: int, head: int) -> str:
        group = self.n_heads // self.n_kv_heads
        if group == 1:
            return f"layer {layer}, head {head}"
        first = self.kv_head(head) * group
        return (f"layer {layer}, head {head} (key/value head {self.kv_head(head)}, "
                f"shared by heads {first}-{first + group - 1})")

    def matrix(self, layer: int, head: int | None = None) -> np.ma.MaskedArray:
        """(T, T) weights of one head (None: the mean over heads), the hidden cells masked."""
        i = self.index(layer)
        if head is not None and not 0 <= head < self.n_heads:
            raise_missing("head", head, range(self.n_heads))
        values = self.weights[i].mean(axis=0) if head is None else self.weights[i, head]
        return np.ma.masked_array(values, mask=~self.visible[i])

    # --- text ------------------------------------------------------------------------------------

    def table(self, layer: int, head: int | None = None, width: int | None = None) -> str:
        """Rows are queries, columns keys, as on the slides; · marks a cell the mask hides. A text
        too long for `width` columns (default: the terminal's) shows its last tokens."""
        m = self.matrix(layer, head)
        width = width or shutil.get_terminal_size((120, 24)).columns
        cell = 7
        label_width = min(14, max(len(t) for t in self.tokens) + 1)
        fits = max(1, (width - label_width) // cell)
        start = max(0, len(self.tokens) - fits)
        shown = range(start, len(self.tokens))
        title = self.head_title(layer, head) if head is not None else f"layer {layer}, mean of {self.n_heads} heads"
        lines = [f"{title}: rows are queries, columns keys, {MASKED} = masked"]
        if start:
            lines.append(f"… the first {start} of {len(self.tokens)} tokens are left out to fit {width} columns")
        lines.append(" " * label_width + "".join(f"{self.tokens[k][:cell - 1]:>{cell}}" for k in shown))
        for q in shown:
            cells = "".join(f"{MASKED:>{cell}}" if m.mask[q, k] else f"{m.data[q, k]:>{cell}.2f}" for k in shown)
            lines.append(f"{self.tokens[q][:label_width - 1]:<{label_width}}{cells}")
        return "\n".join(lines)

    # --- pictures --------------------------------------------------------------------------------

    def heatmap(self, layer: int):
        """A matplotlib Figure: every head of one layer, token labels on both axes, one colour bar."""
        cols = math.ceil(math.sqrt(self.n_heads))
        rows = math.ceil(self.n_heads / cols)
        T = len(self.tokens)
        size = max(2.6, min(6.0, 0.28 * T))
        fig = new_figure(figsize=(cols * size + 1, rows * size))
        axes = fig.subplots(rows, cols, squeeze=False)
        image = None
        for head, ax in enumerate(axes.flat):
            if head >= self.n_heads:
                ax.axis("off")
                continue
            image = _draw(ax, self.matrix(layer, head), self.tokens if T <= 40 else None)
            ax.set_title(f"head {head}" + (f" (kv {self.kv_head(head)})" if self.n_kv_heads != self.n_heads else ""),
                         fontsize=9)
        unlabelled = "" if T <= 40 else f"; {T} tokens, too many to label"
        fig.suptitle(f"layer {layer}: attention weights (rows: queries, columns: keys; grey: masked{unlabelled})")
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        return fig

    def model_view(self):
        """Every probed layer (rows) and head (columns) as small multiples."""
        L, H = len(self.layers), self.n_heads
        fig = new_figure(figsize=(H * 1.1 + 1, L * 1.1 + 0.6), layout="constrained")
        axes = fig.subplots(L, H, squeeze=False)
        for i, layer in enumerate(self.layers):
            for head in range(H):
                ax = axes[i, head]
                _draw(ax, self.matrix(layer, head), None)
                if head == 0:
                    ax.set_ylabel(f"layer {layer}", fontsize=7)
                if i == 0:
                    ax.set_title(f"head {head}", fontsize=7)
        fig.suptitle(f"every layer and head ({len(self.tokens)} tokens)")
        return fig

    def save_pngs(self, folder: str | Path) -> list[Path]:
        """One heatmap per probed layer and the model view, as PNG files in `folder`."""
        return [save_figure(self.model_view() if layer == "all" else self.heatmap(layer),
                            Path(folder) / f"attention-layer-{layer}.png") for layer in [*self.layers, "all"]]

    def html(self, path: str | Path) -> Path:
        """The explorer: one self-contained HTML page (see look/explorer.py)."""
        return write_explorer(self, path)


def _draw(ax, matrix: np.ma.MaskedArray, tokens: Sequence[str] | None):
    # masked cells in grey
    image = ax.imshow(matrix, cmap=colormap("viridis", bad="#d9d9d9"), vmin=0.0, vmax=1.0, interpolation="nearest")
    if tokens is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tokens)), tokens, fontsize=7)
    return image


def raise_missing(what: str, value, known: Iterable[int]) -> None:
    known = list(known)
    raise LucidError(f"{what} {value} is not in this view (it has {what}s {known[0]}-{known[-1]})"
                     if known == list(range(known[0], known[-1] + 1)) else
                     f"{what} {value} is not in this view (it has {what}s {', '.join(map(str, known))})")


@torch.no_grad()
def attention(model, tokenizer, text, layers: Iterable[int] | str | None = None) -> AttentionView:
    """Run `text` through the model once and keep the attention weights of `layers` (default: all)."""
    ids = text_ids(model, tokenizer, text)
    chosen = "all" if layers is None else layers
    if not chosen:
        raise LucidError("choose at least one layer to look at")
    with probe(model, attention=chosen) as p:
        model(as_batch(model, ids))
    kept = sorted(p.attention)
    config = model.config
    positions = torch.arange(len(ids))[None]
    visible = [attention_mask(positions, positions, None, config.causal,
                              config.sliding_window if config.uses_sliding_window(layer) else None)[0, 0]
               for layer in kept]
    return AttentionView(weights=torch.stack([p.attention[layer][0] for layer in kept]).float().cpu().numpy(),
                         visible=torch.stack(visible).numpy(), layers=kept, tokens=labels(tokenizer, ids),
                         n_kv_heads=config.n_kv_heads, text=text if isinstance(text, str) else "")
