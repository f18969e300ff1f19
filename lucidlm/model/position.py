"""The four ways a transformer learns where a token is.

- learned absolute (GPT-2): a trained vector per position, added to the token embedding;
- sinusoidal (Vaswani et al. 2017, section 3.5): fixed sin/cos waves, added to the embedding;
- rotary, RoPE (Su et al. 2021): queries and keys rotated by a position-dependent angle, with
  linear or Llama-3 frequency scaling for longer contexts;
- relative: a learned score per head for each clipped distance key_pos - query_pos, added to the
  attention logits (Shaw et al. 2018, as a scalar bias).
Every module takes explicit positions (B, T), so left padding and a KV cache need no special case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import LucidError


def infer_positions(input_ids: torch.Tensor, valid: torch.Tensor | None, cache=None) -> torch.Tensor:
    """Each new token's position: real tokens are counted from the cache's next position (0 without
    a cache); padding repeats its neighbour's position and is masked anyway. (B, T), or (1, T)
    shared by every row when nothing is padded or cached, which keeps the backward cheap."""
    steps = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]  # (1, T)
    start = cache.next_position[:, None] if cache is not None else 0  # (B, 1)
    if valid is None:
        return start + steps
    return start + (valid.long().cumsum(dim=1) - 1).clamp(min=0)


class LearnedPositions(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(config.context_length, config.d_model))

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        if int(positions.max()) >= self.weight.shape[0]:
            raise LucidError(f"position {int(positions.max())} is beyond the model's learned "
                             f"context of {self.weight.shape[0]} tokens")
        # F.embedding, not weight[positions]: with positions (B, T) the indexing's backward adds
        # the rows' gradients in a thread-dependent order (measured: not bit-identical run to run
        # on 2 threads), and a resumed run must repeat an uninterrupted one exactly.
        return F.embedding(positions, self.weight)  # (B, T, C)


def sinusoidal_table(n_positions: int, dim: int, layout: str = "interleaved") -> torch.Tensor:
    """(n_positions, dim): waves sin(pos / 10000^(2i/dim)) and cos of the same, in alternate
    channels ("interleaved", the paper's) or all sines then all cosines ("halves", Marian's)."""
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    # float64, then float32: Marian builds its table in numpy's float64, and far positions need it
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    sines, cosines = torch.sin(position * rate), torch.cos(position * rate)[:, : dim // 2]
    if layout == "halves":
        return torch.cat((sines, cosines), dim=1).float()
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = sines
    table[:, 1::2] = cosines
    return table.float()


class SinusoidalPositions(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.dim, self.layout = config.d_model, config.sinusoidal_layout
        self.register_buffer("table", torch.empty(0), persistent=False)  # built on first use

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        needed = int(positions.max()) + 1 if positions.numel() else 1
        if self.table.shape[0] < needed or self.table.device != positions.device:
            self.table = sinusoidal_table(max(needed, 2 * self.table.shape[0]), self.dim, self.layout).to(
                positions.device)
        return self.table[positions]  # (B, T, C)


def rope_inverse_frequencies(config: Config, local: bool = False, long: bool = False) -> torch.Tensor:
    """(R/2,) angular speed of each rotated channel pair (R = config.rotary_dim), with the configured
    context scaling. local: a sliding-window layer's, with rope_local_base and no scaling (Gemma 3).
    long: longrope's long-context factors instead of its short ones."""
    dim = config.rotary_dim
    base = config.rope_local_base if local else config.rope_base
    # Same expressions as the reference implementations, so the angles agree to the last bit.
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if local:
        return 1.0 / (base ** exponents)
    if config.rope_scaling == "longrope":
        # LongRoPE (Ding et al. 2024): a searched stretch of each pair's wavelength.
        factors = torch.tensor(config.rope_long_factors if long else config.rope_short_factors, dtype=torch.float32)
        return 1.0 / (factors * base ** exponents)
    inv_freq = 1.0 / (base ** exponents)
    factor = config.rope_scaling_factor
    if config.rope_scaling == "linear":
        return inv_freq / factor
    if config.rope_scaling == "llama3":
        # Llama 3.1: slow (long-wavelength) channels are stretched by `factor`, fast ones are kept,
        # and the band in between is interpolated smoothly.
        old_context = config.rope_original_context_length
        low, high = config.rope_low_freq_factor, config.rope_high_freq_factor
        wavelength = 2 * math.pi / inv_freq
        scaled = torch.where(wavelength > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelength - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        in_band = ~(wavelength < old_context / high) & ~(wavelength > old_context / low)
        return torch.where(in_band, smoothed, scaled)
    return inv_freq


class RotaryEmbedding(nn.Module):
    """Holds cos/sin tables for all positions seen so far; `angles(positions)` looks them up.
    local=True: the tables of sliding-window layers with a base of their own (rope_local_base)."""

    def __init__(self, config: Config, local: bool = False) -> None:
        super().__init__()
        self.config, self.local = config, local
        self.long = False  # longrope: the tables hold the long-context factors' angles
        self.register_buffer("cos_table", torch.empty(0), persistent=False)
        self.register_buffer("sin_table", torch.empty(0), persistent=False)

    def _build(self, n_positions: int, device: torch.device, long: bool) -> None:
        inv_freq = rope_inverse_frequencies(self.config, self.local, long).to(device)
        freqs = torch.outer(torch.arange(n_positions, device=device, dtype=torch.float32), inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)  # (P, R): the two halves share frequencies
        scale = 1.0 if self.local else self.config.rope_attention_factor
        self.cos_table, self.sin_table = angles.cos() * scale, angles.sin() * scale
        self.long = long

    def angles(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin, each (B, T, 1, R), ready to broadcast over the heads of (B, T, H, D)."""
        needed = int(positions.max()) + 1 if positions.numel() else 1
        # subtle: longrope picks one factor set per forward, from its furthest position, as
        # transformers (and Phi-3's own code) do; keys cached before the switch are stale after
        # it, and the engine recomputes them (Config.rope_switch_length).
        switch = self.config.rope_switch_length
        long = not self.local and switch is not None and needed > switch
        if self.cos_table.shape[0] < needed or self.cos_table.device != positions.device or long != self.long:
            # Grow by doubling: a long context's full table would be memory most runs never use.
            self._build(max(needed, 2 * self.cos_table.shape[0], 256), positions.device, long)
        cos = self.cos_table[positions].to(dtype).unsqueeze(2)
        sin = self.sin_table[positions].to(dtype).unsqueeze(2)
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + R/2) of x (B, T, H, D) by the angles in cos/sin (B, T, 1, R);
    with R < D (partial rotary) the last D - R channels pass unrotated."""
    R = cos.shape[-1]
    if R < x.shape[-1]:
        return torch.cat((apply_rotary(x[..., :R], cos, sin), x[..., R:]), dim=-1)
    if cos.dtype != x.dtype:
        # Under autocast x is bfloat16 while the tables are float32; rotating in x's dtype keeps
        # queries and keys in it (as transformers does), rather than promoting attention to float32.
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # "rotate_half"
    return x * cos + rotated * sin


class RelativePositionBias(nn.Module):
    """A learned logit per head for each relative distance, clipped to +-relative_max_distance."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.max_distance = config.relative_max_distance
        self.weight = nn.Parameter(torch.zeros(2 * self.max_distance + 1, config.n_heads))

    def forward(self, query_positions: torch.Tensor, key_positions: torch.Tensor) -> torch.Tensor:
        distance = key_positions[:, None, :] - query_positions[:, :, None]  # (B, T, S)
        index = distance.clamp(-self.max_distance, self.max_distance) + self.max_distance
        return F.embedding(index, self.weight).permute(0, 3, 1, 2)  # (B, T, S, H) -> (B, H, T, S), as above
