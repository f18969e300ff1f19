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
from ..generation.seq2seq import generate_seq2seq
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
    key_tokens: list[str] | None = None  # cross-attention: the source's labels (columns); None: `tokens`
    kind: str = "attention"  # or "cross-attention"

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    @property
    def keys(self) -> list[str]:
        return self.key_tokens if self.key_tokens is not None else self.tokens

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
        """(T, S) weights of one head (None: the mean over heads), the hidden cells masked."""
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
        start = max(0, len(self.keys) - fits)
        shown = range(start, len(self.keys))
        # Self-attention shows the same tokens as rows; cross-attention shows every target row.
        rows = shown if self.key_tokens is None else range(len(self.tokens))
        title = self.head_title(layer, head) if head is not None else f"layer {layer}, mean of {self.n_heads} heads"
        what = "rows are queries, columns keys" if self.key_tokens is None else \
            "cross-attention: rows are the target's tokens, columns the source's"
        lines = [f"{title}: {what}, {MASKED} = masked"]
        if start:
            lines.append(f"… the first {start} of {len(self.keys)} tokens are left out to fit {width} columns")
        lines.append(" " * label_width + "".join(f"{self.keys[k][:cell - 1]:>{cell}}" for k in shown))
        for q in rows:
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
            labelled = max(T, len(self.keys)) <= 40
            image = _draw(ax, self.matrix(layer, head), (self.tokens, self.keys) if labelled else None)
            ax.set_title(f"head {head}" + (f" (kv {self.kv_head(head)})" if self.n_kv_heads != self.n_heads else ""),
                         fontsize=9)
        unlabelled = "" if T <= 40 else f"; {T} tokens, too many to label"
        axes_are = "rows: queries, columns: keys" if self.key_tokens is None else "rows: target, columns: source"
        fig.suptitle(f"layer {layer}: {self.kind} weights ({axes_are}; grey: masked{unlabelled})")
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


def _draw(ax, matrix: np.ma.MaskedArray, labels: tuple[Sequence[str], Sequence[str]] | None):
    """labels: (query tokens, key tokens), or None to leave the axes unlabelled."""
    # masked cells in grey
    image = ax.imshow(matrix, cmap=colormap("viridis", bad="#d9d9d9"), vmin=0.0, vmax=1.0, interpolation="nearest")
    if labels is None:
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        queries, keys = labels
        ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=7)
        ax.set_yticks(range(len(queries)), queries, fontsize=7)
    return image


def raise_missing(what: str, value, known: Iterable[int]) -> None:
    known = list(known)
    raise LucidError(f"{what} {value} is not in this view (it has {what}s {known[0]}-{known[-1]})"
                     if known == list(range(known[0], known[-1] + 1)) else
                     f"{what} {value} is not in this view (it has {what}s {', '.join(map(str, known))})")


@torch.no_grad()
def attention(model, tokenizer, text, layers: Iterable[int] | str | None = None, cross: bool = False) -> AttentionView:
    """Run `text` through the model once and keep the attention weights of `layers` (default: all).

    An encoder-decoder reads `text` as its source: the view is its encoder's self-attention, or
    with cross=True, the decoder's cross-attention while it writes its greedy translation (rows:
    each token it wrote, columns: the source's tokens)."""
    chosen = "all" if layers is None else layers
    if not chosen:
        raise LucidError("choose at least one layer to look at")
    if model.config.is_encoder_decoder:
        return cross_attention(model, tokenizer, text, chosen) if cross else \
            attention(model.encoder, tokenizer, source_ids(model, tokenizer, text), chosen)
    if cross:
        raise LucidError("--cross needs an encoder-decoder: this model has no cross-attention")
    ids = text_ids(model, tokenizer, text)
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


def source_ids(model, tokenizer, text: str) -> list[int]:
    """An encoder-decoder's source as it was trained: the text's ids, then the end token."""
    if tokenizer is None or tokenizer.eos_token_id is None:
        raise LucidError("reading a source needs the model's tokenizer, with an end token")
    ids = tokenizer.encode_ordinary(text) + [tokenizer.eos_token_id]
    if len(ids) > model.config.context_length:
        raise LucidError(f"the text has {len(ids)} tokens; the model's context is {model.config.context_length}")
    return ids


@torch.no_grad()
def cross_attention(model, tokenizer, text: str, layers: Iterable[int] | str) -> AttentionView:
    """The decoder's cross-attention while it writes its greedy translation of `text`: row i is the
    step that wrote output token i, columns are the source's tokens (all visible)."""
    source = source_ids(model, tokenizer, text)
    written = generate_seq2seq(model, [source], model.config.context_length - 1, [tokenizer.eos_token_id],
                               pad_id=tokenizer.pad_token_id or 0)[0]
    decoder_ids = [model.config.decoder_start_token_id] + written[:-1]  # what the decoder read at each step
    with probe(model, cross=layers) as p:
        model(as_batch(model, decoder_ids), source_ids=as_batch(model, source))
    kept = sorted(p.cross)
    weights = torch.stack([p.cross[layer][0] for layer in kept]).float().cpu().numpy()  # (L, H, T, S)
    return AttentionView(weights=weights, visible=np.ones((len(kept), len(written), len(source)), dtype=bool),
                         layers=kept, tokens=labels(tokenizer, written), n_kv_heads=model.config.n_kv_heads,
                         text=f"{text} → {tokenizer.decode([t for t in written if t != tokenizer.eos_token_id])}",
                         key_tokens=labels(tokenizer, source), kind="cross-attention")
