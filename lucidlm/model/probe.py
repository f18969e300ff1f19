"""Probes: look inside a model without changing how it runs.

    with lucidlm.probe(model, attention=[3], hidden=True) as p:
        model(ids)
    p.attention[3]    # (B, H, T, S) attention weights of layer 3
    p.hidden[0]       # (B, T, C) the embeddings; p.hidden[i + 1] is block i's output

Only the chosen layers record. A probed attention layer hands its queries and keys (after rotary
positions and the KV cache) to the probe, which recomputes the weights with the plain path's own
formula; the layer's output still comes from the fused kernel, and unprobed layers do nothing
extra. Block outputs come from forward hooks. Nothing is threaded through forward signatures.
Every forward while the probe is open adds one Record (`p.records`), so generation one token at a
time gives one per step (weights (B, H, 1, S) under the KV cache); `p.attention` and friends are
the last forward's. Recorded tensors are detached.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch

from ..errors import LucidError
from .mask import Mask


@dataclass
class Record:
    """What one forward pass recorded."""

    attention: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T, S)
    cross: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T, S_source)
    hidden: list[torch.Tensor] = field(default_factory=list)  # [embeddings (B, T, C), block 0 out, ...]
    q: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, H, T, D), after rotation
    k: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, Hkv, S, D), cached keys included
    v: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, Hkv, S, D)


class Probe:
    def __init__(self, model, attention: Iterable[int] | str | bool = (), hidden: bool = False,
                 qkv: Iterable[int] | str | bool = (), last_query: bool = False,
                 cross: Iterable[int] | str | bool = ()) -> None:
        n_layers = len(model.blocks)
        self.model = model
        self.last_query = last_query  # record the last query's row only: (B, H, 1, S) whatever T is
        self.attention_layers = _layers(attention, n_layers, "attention")
        self.cross_layers = _layers(cross, n_layers, "cross")
        if self.cross_layers and model.blocks[0].cross_attn is None:
            raise LucidError("cross: this model has no cross-attention (only an encoder-decoder's decoder has it)")
        self.qkv_layers = _layers(qkv, n_layers, "qkv")
        self.want_hidden = hidden
        self.records: list[Record] = []
        self._undo: list = []

    # --- the last forward's recordings -----------------------------------------------------------

    @property
    def last(self) -> Record:
        if not self.records:
            raise LucidError("the probe has recorded nothing yet: run the model inside the `with` block")
        return self.records[-1]

    @property
    def attention(self) -> dict[int, torch.Tensor]:
        return self.last.attention

    @property
    def cross(self) -> dict[int, torch.Tensor]:
        return self.last.cross

    @property
    def hidden(self) -> list[torch.Tensor]:
        return self.last.hidden

    @property
    def q(self) -> dict[int, torch.Tensor]:
        return self.last.q

    @property
    def k(self) -> dict[int, torch.Tensor]:
        return self.last.k

    @property
    def v(self) -> dict[int, torch.Tensor]:
        return self.last.v

    # --- attaching and detaching -----------------------------------------------------------------

    def attach(self) -> None:
        blocks = self.model.blocks
        # Every forward passes through block 0 first: that is where a new record starts.
        self._hook(blocks[0].register_forward_pre_hook(self._start))
        if self.want_hidden:
            for block in blocks:
                self._hook(block.register_forward_hook(self._block_output))
        for i in sorted(self.attention_layers | self.qkv_layers):
            recorders = blocks[i].attn.recorders
            recorders.append(self._record_attention)  # probes may overlap: each keeps its own records
            self._undo.append(lambda recorders=recorders: recorders.remove(self._record_attention))
        for i in sorted(self.cross_layers):
            recorders = blocks[i].cross_attn.recorders
            recorders.append(self._record_cross)
            self._undo.append(lambda recorders=recorders: recorders.remove(self._record_cross))

    def detach(self) -> None:
        while self._undo:
            self._undo.pop()()

    def _hook(self, handle) -> None:
        self._undo.append(handle.remove)

    def _start(self, block, args) -> None:
        self.records.append(Record())
        if self.want_hidden:
            self.records[-1].hidden.append(args[0].detach())  # the embeddings: block 0's input

    def _block_output(self, block, args, output) -> None:
        self.records[-1].hidden.append(output.detach())

    def _record_attention(self, attn, q, k, v, mask, position_bias) -> None:
        record, layer = self.records[-1], attn.layer_index
        if layer in self.attention_layers:
            record.attention[layer] = self._weights(attn, q, k, mask, position_bias)
        if layer in self.qkv_layers:
            record.q[layer], record.k[layer], record.v[layer] = q.detach(), k.detach(), v.detach()

    def _record_cross(self, attn, q, k, v, mask, position_bias) -> None:
        self.records[-1].cross[attn.layer_index] = self._weights(attn, q, k, mask, position_bias)

    def _weights(self, attn, q, k, mask, position_bias) -> torch.Tensor:
        if self.last_query:
            q, position_bias = q[:, :, -1:], position_bias[:, :, -1:] if position_bias is not None else None
            if mask.visible is not None and mask.visible.shape[2] > 1:  # a cross mask (B, 1, 1, S) serves every row
                mask = Mask(mask.visible[:, :, -1:])
            elif mask.visible is None:
                mask = Mask(None)  # the last row sees all
        with torch.no_grad():
            return attn.weights(q.detach(), k.detach(), mask, position_bias)


def _layers(chosen: Iterable[int] | str | bool, n_layers: int, what: str) -> set[int]:
    """'all' or True: every layer; otherwise the listed indices, each checked."""
    if chosen is True or chosen == "all":
        return set(range(n_layers))
    if chosen is False or chosen is None:
        return set()
    if isinstance(chosen, int):
        chosen = [chosen]
    layers = set()
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_layers:
            raise LucidError(f"{what}: layer {i!r} is out of range (the model has {n_layers} layers, 0-{n_layers - 1})")
        layers.add(i)
    return layers


@contextmanager
def probe(model, attention: Iterable[int] | str | bool = (), hidden: bool = False,
          qkv: Iterable[int] | str | bool = (), last_query: bool = False,
          cross: Iterable[int] | str | bool = ()) -> Iterator[Probe]:
    """Record inside `model` while the block runs: attention weights (B, H, T, S) of the chosen
    layers (last_query=True: only the last query's row, (B, H, 1, S), which is all that generation
    one token at a time needs), the residual stream after every block (hidden=True), queries, keys
    and values, and an encoder-decoder's cross-attention weights (B, H, T, S_source) (cross).
    (An encoder-decoder's encoder is a model too: probe(model.encoder, ...).)"""
    p = Probe(model, attention, hidden, qkv, last_query, cross)
    try:
        p.attach()
        yield p
    finally:
        p.detach()


def is_watched(block) -> bool:
    """Whether a probe's attention recorders or any hook watch this block: a path that computes the
    block other than by calling it (a shared prefix, the C decode step) must then step aside."""
    return bool(block.attn.recorders or block._forward_hooks or block._forward_pre_hooks)
