"""The transformer: token embedding, position signal, a stack of blocks, final norm and LM head.

One parametrised model serves every family; Config says which norm, position kind, MLP and biases
to use. Follows the GPT-2 / Llama layout (Radford et al. 2019; Touvron et al. 2023).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import Config
from ..errors import LucidError
from .attention import Attention, Mask
from .kv_cache import KVCache
from .linear import Linear, TokenEmbedding
from .mask import attention_mask
from .mlp import MLP
from .norm import make_norm
from .position import LearnedPositions, RelativePositionBias, RotaryEmbedding, SinusoidalPositions


class Block(nn.Module):
    """Attention then MLP, each on a residual branch; the norm sits before (pre) or after (post)."""

    def __init__(self, config: Config, layer_index: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.sliding = config.uses_sliding_window(layer_index)
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer_index)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: Mask, rope, position_bias, cache,
                keep_weights: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.pre_norm:
            a, weights = self.attn(self.attn_norm(x), mask, rope, position_bias, cache, keep_weights)
            x = x + self.drop(a)
            return x + self.drop(self.mlp(self.mlp_norm(x))), weights
        a, weights = self.attn(x, mask, rope, position_bias, cache, keep_weights)
        x = self.attn_norm(x + self.drop(a))
        return self.mlp_norm(x + self.drop(self.mlp(x))), weights


class Transformer(nn.Module):
    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = TokenEmbedding(config.vocab_size, config.d_model)
        self.pos_emb = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}.get(config.position)
        self.pos_emb = self.pos_emb(config) if self.pos_emb else None
        self.rope = RotaryEmbedding(config) if config.position == "rope" else None
        self.rel_bias = RelativePositionBias(config) if config.position == "relative" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.final_norm = make_norm(config) if config.final_norm else nn.Identity()
        # A tied head has no matrix of its own: logits come from the embedding (see head()).
        self.lm_head = None if config.tie_embeddings else Linear(config.d_model, config.vocab_size, bias=False)
        if not self.tok_emb.weight.is_meta:
            self.init_weights()

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """GPT-2's initialisation: N(0, 0.02) weights, zero biases, and residual output
        projections scaled by 1/sqrt(2 * n_layers) so the residual stream does not grow with depth."""
        for name, p in self.named_parameters():
            if name.endswith("bias") or "norm" in name or name.startswith("rel_bias"):
                if "norm" in name and name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()
            elif name.endswith(("attn.out.weight", "mlp.down.weight")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                p.normal_(0.0, std)

    # --- the forward pass --------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, positions: torch.Tensor | None = None,
                return_attentions: bool = False, logits_for: str = "all"):
        """input_ids (B, T) -> logits (B, T, V).

        attention_mask (B, T): 1 for real tokens, 0 for padding (left or right). cache: past keys
        and values; the new tokens are appended to it. positions (B, T): defaults to counting real
        tokens from the cache's next position. return_attentions: also return each layer's
        attention weights (B, H, T, S), computed on the plain path. logits_for="last": only the
        last position's logits (B, 1, V), which is all generation needs.
        """
        B, T = input_ids.shape
        valid = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise LucidError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                                 f"input_ids {tuple(input_ids.shape)}")
            valid = attention_mask.bool()
            if bool(valid.all()):
                valid = None  # no padding: take the fast path
        if positions is None:
            steps = torch.arange(T, device=input_ids.device)[None, :]  # (1, T)
            if cache is None and valid is None:
                positions = steps  # shared by every row: broadcasting keeps the backward cheap
            elif valid is None:
                positions = cache.next_position[:, None] + steps  # (B, T)
            else:
                start = cache.next_position[:, None] if cache is not None else 0
                positions = start + (valid.long().cumsum(dim=1) - 1).clamp(min=0)

        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            if isinstance(self.pos_emb, LearnedPositions) and int(positions.max()) >= self.config.context_length:
                raise LucidError(f"position {int(positions.max())} is beyond the model's learned "
                                 f"context of {self.config.context_length} tokens")
            x = x + self.pos_emb(positions)
        x = self.drop(x)

        if cache is not None:
            key_positions, key_valid = cache.begin(positions, valid)
        else:
            key_positions, key_valid = positions, valid
        rope = self.rope.angles(positions, x.dtype) if self.rope is not None else None
        position_bias = self.rel_bias(positions, key_positions) if self.rel_bias is not None else None
        masks = {}  # built once per forward, shared by all layers with the same window

        attentions = []
        for block in self.blocks:
            window = self.config.sliding_window if block.sliding else None
            if window not in masks:
                masks[window] = self._mask(positions, key_positions, key_valid, window)
            x, weights = block(x, masks[window], rope, position_bias, cache, return_attentions)
            if return_attentions:
                attentions.append(weights)
        if cache is not None:
            cache.commit(positions[:, -1] + 1 if valid is None else
                         torch.maximum(cache.next_position, torch.where(valid, positions + 1, 0).amax(dim=1)))

        if logits_for == "last":
            x = x[:, -1:]
        logits = self.head(self.final_norm(x))  # (B, T, V)
        return (logits, attentions) if return_attentions else logits

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) -> logits (B, T, V)."""
        return self.tok_emb.logits(x) if self.lm_head is None else self.lm_head(x)

    def _mask(self, query_positions, key_positions, key_valid, window: int | None) -> Mask:
        """The cheapest mask description that is exact for this step."""
        T, S = query_positions.shape[1], key_positions.shape[1]
        if key_valid is None and (window is None or S <= window):
            if not self.config.causal:
                return None
            if T == S:
                return "causal"  # a plain forward: the fused kernel builds the triangle itself
            if T == 1:
                return None  # one new token after the cache: it may see every key
        return attention_mask(query_positions, key_positions, key_valid, self.config.causal, window)

    # --- switches and surgery ------------------------------------------------------------------

    def set_fused_attention(self, fused: bool) -> None:
        """Choose the fused kernel (default) or the plain softmax path in every layer."""
        for block in self.blocks:
            block.attn.fused = fused

    def set_dropout(self, p: float) -> None:
        """Change every dropout rate (residual, embedding and attention), e.g. to fine-tune."""
        self.config = self.config.replace(dropout=p, attention_dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, Attention):
                module.dropout = p

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def resize_token_embeddings(self, n: int) -> None:
        """Grow or shrink the vocabulary to n tokens (for added special tokens). New tokens start
        at the mean of the existing embeddings, an "average" token, and so do new head columns."""
        if n == self.config.vocab_size:
            return
        if n < 1:
            raise LucidError(f"cannot resize the vocabulary to {n} tokens")

        def resized(weight: torch.Tensor) -> nn.Parameter:  # (C, V) -> (C, n)
            new = weight.new_empty(weight.shape[0], n)
            keep = min(n, weight.shape[1])
            with torch.no_grad():
                new[:, :keep] = weight[:, :keep]
                new[:, keep:] = weight.mean(dim=1, keepdim=True)
            return nn.Parameter(new, requires_grad=weight.requires_grad)

        self.config = self.config.replace(vocab_size=n)
        self.tok_emb.weight = resized(self.tok_emb.weight.data)
        if self.lm_head is not None:
            self.lm_head.weight = resized(self.lm_head.weight.data)

    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load our-named tensors strictly, adopting them without a copy (the model may have been
        built on the meta device)."""
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected {', '.join(unexpected)}"] if unexpected else [])
            raise LucidError("weights do not match the model: " + "; ".join(parts))
        for name, tensor in expected.items():
            if tuple(state_dict[name].shape) != tuple(tensor.shape):
                raise LucidError(f"weight {name} has shape {tuple(state_dict[name].shape)}, "
                                 f"the model expects {tuple(tensor.shape)}")
        self.load_state_dict(state_dict, strict=True, assign=True)
        device = self.tok_emb.weight.device
        for module in self.modules():  # position tables are built lazily; move their placeholders
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer.is_meta:
                    setattr(module, name, torch.empty(0, device=device))
