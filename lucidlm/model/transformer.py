"""The transformer: token embedding, position signal, a stack of blocks and a final norm (the
backbone, `hidden`), then a head (`forward`: the LM head's logits).

One parametrised model serves every family; Config says which norm, position kind, MLP and biases
to use. Follows the GPT-2 / Llama layout (Radford et al. 2019; Touvron et al. 2023), and mlx-lm's
split of a backbone from the head on top of it.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from ..config import Config
from ..errors import LucidError
from .attention import Attention
from .context import ForwardContext
from .kv_cache import KVCache
from .linear import LMHead, TokenEmbedding
from .mask import padding_of
from .mlp import MLP
from .norm import make_norm
from .position import (LearnedPositions, RelativePositionBias, RotaryEmbedding, SinusoidalPositions,
                       infer_positions)
from .probe import probe


class Block(nn.Module):
    """Attention then MLP, each on a residual branch; the norm sits before (pre) or after (post)."""

    def __init__(self, config: Config, layer_index: int) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer_index)
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: ForwardContext) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.attn_norm(x), context))
            return x + self.drop(self.mlp(self.mlp_norm(x)))
        x = self.attn_norm(x + self.drop(self.attn(x, context)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class Transformer(nn.Module):
    """The backbone (`hidden`: ids -> hidden states) and its LM head (`forward`: ids -> logits)."""

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
        self.lm_head = LMHead(config.d_model, config.vocab_size,
                              tied_to=self.tok_emb if config.tie_embeddings else None)
        # A zero-size buffer that follows .to(), .float() and .bfloat16(): the dtype activations
        # flow in and the device they live on, whatever the weights are stored as.
        self.register_buffer("anchor", torch.empty(0), persistent=False)
        if not self.tok_emb.weight_t.is_meta:
            self.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

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
            elif name.endswith(("attn.out.weight_t", "mlp.down.weight_t")):
                p.normal_(0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                p.normal_(0.0, std)

    # --- the forward pass --------------------------------------------------------------------------

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               cache: KVCache | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> hidden states (B, T, C), the final norm applied.

        attention_mask (B, T): 1 for real tokens, 0 for padding (left or right). cache: past keys
        and values; the new tokens are appended to it. positions (B, T): by default real tokens
        are counted from the cache's next position.
        """
        valid = padding_of(input_ids, attention_mask)  # (B, T) bool, or None: no padding
        if positions is None:
            positions = infer_positions(input_ids, valid, cache)
        x = self.tok_emb(input_ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        x = self.drop(x)
        context = self.forward_context(positions, valid, cache)
        for block in self.blocks:
            x = block(x, context)
        if cache is not None:
            cache.commit()
        return self.final_norm(x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, positions: torch.Tensor | None = None,
                return_attentions: bool = False, logits_for: str = "all"):
        """input_ids (B, T) -> logits (B, T, V); arguments as for hidden().

        logits_for="last": only the last position's logits (B, 1, V), which is all generation
        needs. return_attentions: also return each layer's attention weights (B, H, T, S), as
        recorded by a probe on every layer.
        """
        with probe(self, attention="all") if return_attentions else nullcontext() as recorded:
            x = self.hidden(input_ids, attention_mask, cache, positions)
        logits = self.lm_head(x[:, -1:] if logits_for == "last" else x)
        if return_attentions:
            return logits, [recorded.attention[i] for i in range(self.config.n_layers)]
        return logits

    def forward_context(self, positions: torch.Tensor, valid: torch.Tensor | None,
                        cache: KVCache | None) -> ForwardContext:
        """What every layer shares in this forward; with a cache, the new tokens' slots are reserved."""
        key_positions, key_valid = cache.begin(positions, valid) if cache is not None else (positions, valid)
        return ForwardContext(
            positions, key_positions, key_valid, self.config.causal, cache=cache,
            rope=self.rope.angles(positions, self.dtype) if self.rope is not None else None,
            position_bias=self.rel_bias(positions, key_positions) if self.rel_bias is not None else None)

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
        at the mean of the existing embeddings, an "average" token, and so do new head rows."""
        if n == self.config.vocab_size:
            return
        if n < 1:
            raise LucidError(f"cannot resize the vocabulary to {n} tokens")
        self.config = self.config.replace(vocab_size=n)
        self.tok_emb.resize(n)
        self.lm_head.resize(n)
