"""The key/value cache: past keys and values per layer, so each new token costs one step, not a
whole forward over the context.

Buffers are preallocated (B, Hkv, capacity, D) per layer and filled left to right; `length` counts
filled slots. Beside them the cache keeps each slot's position and whether it is a real token
(padding is not), which is all the attention masks need. `truncate` rolls back to an earlier
length (undo a chat turn); SlidingKVCache forgets tokens that no layer can see any more.
An encoder-decoder's cache also holds the encoded source and each layer's cross-attention keys and
values, computed from it once: they do not grow, and a rollback keeps them.
"""

from __future__ import annotations

import torch

from ..config import Config
from ..errors import LucidError

JOIN_HEADROOM = 64  # free slots a batch cache keeps after a row joins it


class KVCache:
    def __init__(self, config: Config, batch_size: int = 1, capacity: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        self.config = config
        self.batch_size = batch_size
        self.max_capacity = config.context_length
        capacity = min(capacity or config.context_length, self.max_capacity)
        self.device, self.dtype = torch.device(device or "cpu"), dtype
        shape = (batch_size, config.n_kv_heads, capacity, config.head_dim)
        # empty, not zeros: a slot is read only after it is written, and untouched memory costs
        # nothing resident until then (a chat's 1024-token cache holds a few hundred).
        self.keys = [torch.empty(shape, device=self.device, dtype=dtype) for _ in range(config.n_layers)]
        self.values = [torch.empty(shape, device=self.device, dtype=dtype) for _ in range(config.n_layers)]
        self.positions = torch.zeros(batch_size, capacity, dtype=torch.long, device=self.device)
        self.valid = torch.ones(batch_size, capacity, dtype=torch.bool, device=self.device)
        self.next_position = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.length = 0  # filled slots
        self.evicted = 0  # tokens forgotten from the front (SlidingKVCache only)
        self.has_padding = False
        self._pending = None  # (positions, valid) of the forward in progress
        self.encoder_output = None  # an EncoderOutput: the source the decoder's cross-attention reads
        self.cross: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # layer -> its keys, values of the source

    def set_source(self, encoder_output) -> None:
        """The source every later step translates (model.encode_source's output)."""
        self.encoder_output, self.cross = encoder_output, {}

    def cross_keys_values(self, layer: int, compute) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's keys and values of the source, computed on first use: compute() -> (k, v)."""
        if layer not in self.cross:
            self.cross[layer] = compute()
        return self.cross[layer]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @property
    def n_tokens(self) -> int:
        """Tokens this cache has consumed since it was created or reset (evicted ones included)."""
        return self.evicted + self.length

    # --- called by the model, once per forward ---------------------------------------------------

    def begin(self, positions: torch.Tensor, valid: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reserve slots for T new tokens with positions (B, T); returns all key positions (B, S)
        and validity (B, S), or None for validity when no slot holds padding."""
        T = positions.shape[1]
        self._make_room(T)
        start, end = self.length, self.length + T
        self.positions[:, start:end] = positions
        if valid is not None:
            self.valid[:, start:end] = valid
            self.has_padding = True
        else:
            self.valid[:, start:end] = True
        self._pending = (positions, valid)
        key_valid = self.valid[:, :end] if self.has_padding else None
        return self.positions[:, :end], key_valid

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's k, v (B, Hkv, T, D) for one layer; return all keys and values (B, Hkv, S, D)."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def commit(self) -> None:
        """The forward succeeded: the reserved slots now count, and the next token's position
        follows the last real one."""
        if self._pending is None:
            raise LucidError("KVCache.commit() without begin(): the model reserves slots before it commits them")
        positions, valid = self._pending
        self.length += positions.shape[1]
        self._pending = None
        if valid is None:
            self.next_position = (positions[:, -1] + 1).expand(self.batch_size).clone()
        else:  # a row whose new tokens are all padding keeps its position
            self.next_position = torch.maximum(self.next_position, torch.where(valid, positions + 1, 0).amax(dim=1))

    # --- called by users of the cache ------------------------------------------------------------

    def truncate(self, n_tokens: int) -> None:
        """Forget everything after the first n_tokens tokens (roll back a turn)."""
        if not 0 <= n_tokens <= self.n_tokens:
            raise LucidError(f"cannot truncate a cache of {self.n_tokens} tokens to {n_tokens}")
        if n_tokens < self.evicted:
            raise LucidError(f"cannot roll back to token {n_tokens}: the sliding cache has already "
                             f"forgotten the first {self.evicted} tokens")
        self.length = n_tokens - self.evicted
        if self.length == 0 and self.evicted == 0:
            self.next_position = torch.zeros_like(self.next_position)
            self.has_padding = False
            return
        filled = slice(0, self.length)
        after_real = torch.where(self.valid[:, filled], self.positions[:, filled] + 1, 0)
        self.next_position = after_real.amax(dim=1) if self.length else self.next_position

    def keep_rows(self, indices) -> None:
        """Keep only these batch rows, in this order (finished rows leave a batch)."""
        index = torch.as_tensor(list(indices), dtype=torch.long, device=self.device)
        self.keys = [t.index_select(0, index) for t in self.keys]
        self.values = [t.index_select(0, index) for t in self.values]
        self.positions, self.valid = self.positions.index_select(0, index), self.valid.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)
        self.batch_size = len(index)
        if self.encoder_output is not None:
            self.encoder_output = self.encoder_output.select(index)
            self.cross = {layer: (k.index_select(0, index), v.index_select(0, index))
                          for layer, (k, v) in self.cross.items()}

    def append_rows(self, other: "KVCache") -> None:
        """Add other's rows below these (continuous batching: a request joins a running batch).
        The shorter side is padded on the left with slots no query can see, so every row's own
        tokens stay contiguous and end at the last slot."""
        if isinstance(self, SlidingKVCache) or isinstance(other, SlidingKVCache):
            raise LucidError("rows join a running batch only in a growing cache, not a sliding one")
        if self.cross or other.cross or self.encoder_output is not None or other.encoder_output is not None:
            raise LucidError("an encoder-decoder's rows cannot join a running batch")
        length = max(self.length, other.length)
        # Room for a few steps, then the usual doubling: a full-size buffer here would be
        # allocated and copied at every join.
        capacity = min(self.max_capacity, length + JOIN_HEADROOM)

        def joined(mine: torch.Tensor, theirs: torch.Tensor, dim: int, fill=0) -> torch.Tensor:
            shape = list(mine.shape)
            shape[0], shape[dim] = mine.shape[0] + theirs.shape[0], capacity
            new = torch.empty(shape, dtype=mine.dtype, device=mine.device)
            for part, t, filled in ((new[:mine.shape[0]], mine, self.length),
                                    (new[mine.shape[0]:], theirs, other.length)):
                # The padding is filled, not left as stale memory: a masked key's weight is 0, and
                # 0 x NaN would still be NaN. Slots after `length` are written before they are read.
                part.narrow(dim, 0, length - filled).fill_(fill)
                part.narrow(dim, length - filled, filled).copy_(t.narrow(dim, 0, filled))
            return new

        self.keys = [joined(a, b, 2) for a, b in zip(self.keys, other.keys)]
        self.values = [joined(a, b, 2) for a, b in zip(self.values, other.values)]
        self.positions = joined(self.positions, other.positions, 1, 0)
        self.valid = joined(self.valid, other.valid, 1, False)
        self.next_position = torch.cat([self.next_position, other.next_position])
        self.has_padding = self.has_padding or other.has_padding or self.length != other.length
        self.batch_size += other.batch_size
        self.length = length

    def drop_leading_padding(self) -> None:
        """Forget the first slots when no row has a real token in them (a long row left the batch):
        the rows that remain stop paying attention over its padding."""
        if self.batch_size == 0 or self.length == 0:
            return
        used = self.valid[:, :self.length].any(dim=0)
        first = int(used.long().argmax()) if bool(used.any()) else self.length
        if first == 0:
            return
        keep = self.length - first
        for buffers in (self.keys, self.values):
            for t in buffers:
                t[:, :, :keep] = t[:, :, first:self.length].clone()
        self.positions[:, :keep] = self.positions[:, first:self.length].clone()
        self.valid[:, :keep] = self.valid[:, first:self.length].clone()
        self.length = keep

    def take_row(self, index: int) -> "KVCache":
        """A one-row copy of row `index`'s real tokens, unpadded (to keep a finished request's
        prefix for the next one). Its tokens must be contiguous and end at the last slot."""
        real = self.valid[index, :self.length]
        first = int(real.long().argmax()) if bool(real.any()) else self.length
        if not bool(real[first:].all()):
            raise LucidError("this row's tokens are not contiguous: it cannot be copied out")
        n = self.length - first
        copy = KVCache(self.config, 1, max(n, 1), device=self.device, dtype=self.dtype)
        for mine, theirs in ((copy.keys, self.keys), (copy.values, self.values)):
            for a, b in zip(mine, theirs):
                a[:, :, :n] = b[index:index + 1, :, first:self.length]
        copy.positions[0, :n] = self.positions[index, first:self.length]
        copy.next_position = self.next_position[index:index + 1].clone()
        copy.length = n
        return copy

    def reset(self) -> None:
        self.evicted = 0
        self.truncate(0)

    def _make_room(self, n_new: int) -> None:
        needed = self.length + n_new
        if needed <= self.capacity:
            return
        if needed > self.max_capacity:
            raise LucidError(f"the KV cache is full: {needed} tokens do not fit in the model's context "
                             f"of {self.max_capacity}")
        self._grow(min(self.max_capacity, max(needed, 2 * self.capacity)))

    def _grow(self, capacity: int) -> None:
        # Reallocation is rare (the capacity doubles), so the per-token path never allocates.
        def grown(t: torch.Tensor, dim: int, fill=None) -> torch.Tensor:
            shape = list(t.shape)
            shape[dim] = capacity
            new = torch.empty(shape, dtype=t.dtype, device=t.device) if fill is None else \
                torch.full(shape, fill, dtype=t.dtype, device=t.device)
            new.narrow(dim, 0, t.shape[dim]).copy_(t)
            return new

        self.keys = [grown(t, 2) for t in self.keys]
        self.values = [grown(t, 2) for t in self.values]
        self.positions = grown(self.positions, 1, 0)
        self.valid = grown(self.valid, 1, True)


class SlidingKVCache(KVCache):
    """For models whose every layer attends only `sliding_window` tokens back: holds at most about
    two windows of tokens and forgets the oldest ones, so generation can run indefinitely in
    bounded memory (positions still grow, as in the reference implementations)."""

    def __init__(self, config: Config, batch_size: int = 1, capacity: int | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        if not config.all_layers_slide:
            raise LucidError("a sliding KV cache needs a model whose every layer uses a sliding window")
        self.window = config.sliding_window
        super().__init__(config, batch_size, capacity or 2 * self.window, device, dtype)
        self.max_capacity = 1 << 62  # bounded by eviction, not by the context

    def _make_room(self, n_new: int) -> None:
        if self.length + n_new <= self.capacity:
            return
        # The first new query needs the window - 1 keys before it; everything older can go.
        keep = min(self.length, self.window - 1)
        drop = self.length - keep
        if drop > 0:
            for buffers in (self.keys, self.values):
                for t in buffers:
                    t[:, :, :keep] = t[:, :, drop:self.length].clone()
            self.positions[:, :keep] = self.positions[:, drop:self.length].clone()
            self.valid[:, :keep] = self.valid[:, drop:self.length].clone()
            self.length, self.evicted = keep, self.evicted + drop
        if self.length + n_new > self.capacity:
            self._grow(self.length + n_new)
