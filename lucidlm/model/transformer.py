"""The transformer: token embedding, position signal, a stack of blocks and a final norm (the
backbone, `hidden`), then a head (`forward`: the LM head's logits).

An encoder-decoder (Config.encoder_layers > 0) is the same model twice: `encoder` is a bidirectional
Transformer without a head that shares the token embedding, and each decoder block adds
cross-attention to the encoded source between its self-attention and its MLP.

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
from .attention import Attention, CrossAttention
from .context import EncoderOutput, ForwardContext
from . import decode_step
from .kv_cache import KVCache
from .heads import ClassifierHead, MLMHead, Pooler, pool
from .linear import LMHead, TokenEmbedding
from .mask import padding_of
from .mlp import MLP
from .norm import make_norm
from .position import (LearnedPositions, RelativePositionBias, RotaryEmbedding, SinusoidalPositions,
                       infer_positions)
from .probe import is_watched, probe
from .shared_prefix import SharedPrefix


class Block(nn.Module):
    """Attention (then cross-attention, in a decoder that reads a source) then MLP, each on a
    residual branch; the norm sits before (pre) or after (post)."""

    def __init__(self, config: Config, layer_index: int, cross: bool = False) -> None:
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.attn_norm = make_norm(config)
        self.attn = Attention(config, layer_index)
        self.cross_norm = make_norm(config) if cross else None
        self.cross_attn = CrossAttention(config, layer_index) if cross else None
        self.mlp_norm = make_norm(config)
        self.mlp = MLP(config)
        # Sandwich norms (Gemma 2): each branch's output is normed too, before the residual add.
        self.attn_post_norm = make_norm(config) if config.sandwich_norm else nn.Identity()
        self.mlp_post_norm = make_norm(config) if config.sandwich_norm else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, context: ForwardContext) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn_post_norm(self.attn(self.attn_norm(x), context)))
            if self.cross_attn is not None:
                x = x + self.drop(self.cross_attn(self.cross_norm(x), context))
            return x + self.drop(self.mlp_post_norm(self.mlp(self.mlp_norm(x))))
        x = self.attn_norm(x + self.drop(self.attn(x, context)))
        if self.cross_attn is not None:
            x = self.cross_norm(x + self.drop(self.cross_attn(x, context)))
        return self.mlp_norm(x + self.drop(self.mlp(x)))


class Transformer(nn.Module):
    """The backbone (`hidden`: ids -> hidden states) and its LM head (`forward`: ids -> logits)."""

    def __init__(self, config: Config, shared_embedding: TokenEmbedding | None = None) -> None:
        super().__init__()
        self.config = config
        if shared_embedding is None:
            self.tok_emb = TokenEmbedding(config.vocab_size, config.d_model)
        else:  # an encoder reads its decoder's embedding, kept out of _modules: one owner, saved once
            self.__dict__["tok_emb"] = shared_embedding
        self.pos_emb = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}.get(config.position)
        self.pos_emb = self.pos_emb(config) if self.pos_emb else None
        self.rope = RotaryEmbedding(config) if config.position == "rope" else None
        local = config.position == "rope" and config.rope_local_base is not None  # Gemma 3's sliding layers
        self.local_rope = RotaryEmbedding(config, local=True) if local else None
        self.rel_bias = RelativePositionBias(config) if config.position == "relative" else None
        self.type_emb = nn.Embedding(config.token_types, config.d_model) if config.token_types else None
        self.emb_norm = make_norm(config) if config.embedding_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i, cross=config.is_encoder_decoder) for i in range(config.n_layers))
        self.encoder = Transformer(config.encoder_config(), self.tok_emb) if config.is_encoder_decoder else None
        self.final_norm = make_norm(config) if config.final_norm else nn.Identity()
        # False: a decoded token always takes the modules' forward, not decode_step.py's C path
        self.fast_step = True
        tied = self.tok_emb if config.tie_embeddings else None
        self.pooler = Pooler(config) if config.pooler else None
        self.lm_head = {"lm": lambda: LMHead(config.d_model, config.vocab_size, config.head_bias, tied_to=tied,
                                             softcap=config.final_logit_softcap),
                        "mlm": lambda: MLMHead(config, self.tok_emb), "none": lambda: None,
                        "classify": lambda: ClassifierHead(config, self.pooler)}[config.head]()
        # A zero-size buffer that follows .to(), .float() and .bfloat16(): the dtype activations
        # flow in and the device they live on, whatever the weights are stored as.
        self.register_buffer("anchor", torch.empty(0), persistent=False)
        if not self.tok_emb.weight_t.is_meta and shared_embedding is None:
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
               cache: KVCache | None = None, positions: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None,
               encoder_output: EncoderOutput | None = None, shared_prefix: int = 0) -> torch.Tensor:
        """input_ids (B, T) -> hidden states (B, T, C), the final norm applied.

        attention_mask (B, T): 1 for real tokens, 0 for padding (left or right). cache: past keys
        and values; the new tokens are appended to it. positions (B, T): by default real tokens
        are counted from the cache's next position. token_type_ids (B, T): segments (default 0).
        encoder_output: an encoder-decoder's source, from encode_source (default: the cache's).
        shared_prefix: how many leading tokens every row has in common, computed once instead of
        once per row (shared_prefix.py; prefix_to_share says what a training batch should use); a
        plain causal forward only.
        """
        shared = None
        if shared_prefix:
            if any(o is not None for o in (cache, positions, token_type_ids, encoder_output)) or \
                    padding_of(input_ids, attention_mask) is not None:
                raise LucidError("a shared prefix goes with a plain forward: no padding mask, cache, positions, "
                                 "segments or source")
            shared = self._checked_prefix(input_ids, shared_prefix)
            input_ids, positions = shared.pack(input_ids)  # (1, P + B (T - P)): the prefix once
            attention_mask = None
        valid = padding_of(input_ids, attention_mask)  # (B, T) bool, or None: no padding
        if (self.fast_step and valid is None and positions is None and token_type_ids is None
                and encoder_output is None and shared is None):
            x = decode_step.try_step(self, input_ids, cache)  # one decoded token in one C call, where it can
            if x is not None:
                return x
        if positions is None:
            positions = infer_positions(input_ids, valid, cache)
        x = self.embed(input_ids, positions, token_type_ids)  # (B, T, C)
        context = self.forward_context(positions, valid, cache)
        context.shared_prefix = shared
        if self.encoder is not None:
            if cache is not None and encoder_output is not None and encoder_output is not cache.encoder_output:
                cache.set_source(encoder_output)  # a new source: its cross keys and values are computed afresh
            context.encoder_output = encoder_output if encoder_output is not None else \
                cache.encoder_output if cache is not None else None
            if context.encoder_output is None:
                raise LucidError("an encoder-decoder's decoder reads a source: pass "
                                 "encoder_output=model.encode_source(source_ids), or a cache that holds it")
        for block in self.blocks:
            x = block(x, context)
        if cache is not None:
            cache.commit()
        x = self.final_norm(x)
        return shared.unpack(x) if shared is not None else x  # each row whole again: (B, T, C)

    def _checked_prefix(self, input_ids: torch.Tensor, length: int) -> SharedPrefix:
        """The layout of a batch whose rows share their first `length` tokens, if this model and
        these rows allow it; else a one-line error."""
        B, T = input_ids.shape
        if isinstance(length, bool) or not isinstance(length, int) or not 0 < length < T:
            raise LucidError(f"shared_prefix is a number of tokens from 1 to {T - 1}, each row keeping one "
                             f"of its own (got {length!r})")
        refusal = self.shared_prefix_refusal()
        if refusal:
            raise LucidError(refusal)
        if bool((input_ids[:, :length] != input_ids[:1, :length]).any()):
            raise LucidError(f"the rows do not share their first {length} tokens")
        return SharedPrefix(length, B, T)

    def shared_prefix_refusal(self) -> str | None:
        """Why this model cannot compute a shared prefix once (see shared_prefix.py), or None."""
        if not self.config.causal or self.encoder is not None:
            return "a shared prefix needs a causal decoder: its rows' prefixes must not see what follows"
        if self.rel_bias is not None:
            return "a shared prefix needs absolute or rotary positions, not a relative position bias"
        # a probe's attention recorders and its forward hooks would see the packed layout
        if any(is_watched(block) for block in self.blocks):
            return ("a probe (or a hook) watches the blocks, which would see the packed layout: "
                    "forward without a shared prefix")
        return None

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token + absolute position + segment embeddings, normed where the model says, (B, T, C)."""
        x = self.tok_emb(input_ids)
        if self.config.embedding_scale != 1.0:
            scale = self.config.embedding_scale
            # subtle: HF Gemma multiplies by sqrt(d_model) rounded to the model's dtype (in bfloat16,
            # sqrt(3840) = 61.97 becomes 62); Marian multiplies by the exact number.
            x = x * (torch.tensor(scale, dtype=x.dtype) if self.config.embedding_scale_in_dtype else scale)
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        if self.type_emb is not None:
            x = x + self.type_emb(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        return self.drop(self.emb_norm(x) if self.emb_norm is not None else x)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: KVCache | None = None, positions: torch.Tensor | None = None,
                return_attentions: bool = False, logits_for: str | torch.Tensor = "all",
                token_type_ids: torch.Tensor | None = None, encoder_output: EncoderOutput | None = None,
                source_ids: torch.Tensor | None = None, source_mask: torch.Tensor | None = None,
                shared_prefix: int = 0):
        """input_ids (B, T) -> the head's output: logits (B, T, V), or the hidden states (B, T, C)
        of a model without a head; arguments as for hidden().

        logits_for="last": only the last position's logits (B, 1, V), which is all generation
        needs; a (B, T) bool tensor: only those positions', (N, V) (masked-LM training).
        return_attentions: also return each layer's attention weights (B, H, T, S), as
        recorded by a probe on every layer. source_ids (B, S) and source_mask: an encoder-decoder's
        source, encoded in this same forward (training: one call, as DistributedDataParallel needs).
        shared_prefix: as for hidden(); the logits are the plain forward's.
        """
        if source_ids is not None:
            encoder_output = self.encode_source(source_ids, source_mask)
        with probe(self, attention="all") if return_attentions else nullcontext() as recorded:
            x = self.hidden(input_ids, attention_mask, cache, positions, token_type_ids, encoder_output,
                            shared_prefix)
        if self.config.head == "classify":  # one token per row: the first, or the last real one (from the mask)
            logits = self.lm_head(x, attention_mask)  # (B, n_labels)
        else:
            if isinstance(logits_for, torch.Tensor):
                x = x[logits_for]  # (N, C)
            elif logits_for == "last":
                x = x[:, -1:]
            logits = self.lm_head(x) if self.lm_head is not None else x
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
            local_rope=self.local_rope.angles(positions, self.dtype) if self.local_rope is not None else None,
            position_bias=self.rel_bias(positions, key_positions) if self.rel_bias is not None else None)

    def encode_source(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> EncoderOutput:
        """An encoder-decoder's source ids (B, S), padded on the right, -> what its decoder reads."""
        if self.encoder is None:
            raise LucidError("this model has no encoder: only an encoder-decoder encodes a source")
        return EncoderOutput(self.encoder.hidden(input_ids, attention_mask), padding_of(input_ids, attention_mask))

    # --- one vector per text -------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, texts: str | list[str], batch_size: int = 32, tokenizer=None,
               convert_to_tensor: bool = True) -> torch.Tensor:
        """Sentence embeddings (N, C): each text's hidden states pooled as Config.pooling says
        (all-MiniLM-L6-v2: the mean over real tokens, L2-normalised), in batches, each text cut at
        the tokenizer's model_max_length. The tokenizer defaults to the one load() attached."""
        tokenizer = tokenizer if tokenizer is not None else getattr(self, "tokenizer", None)
        if self.config.causal:
            raise LucidError("this model is not an encoder: sentence embeddings need one that reads a text whole, "
                             "such as all-MiniLM-L6-v2")
        if tokenizer is None or not callable(tokenizer):
            raise LucidError("encode needs a tokenizer that makes batches (load() attaches the model's own)")
        mode = self.config.pooling if self.config.pooling != "none" else "mean"
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        if not texts:
            return torch.zeros(0, self.config.d_model)
        encoded = tokenizer(texts, truncation=True)
        ids, types = encoded["input_ids"], encoded["token_type_ids"]
        # Batches of texts of similar length waste little on padding: sort, then put back in order.
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        vectors = torch.empty(len(texts), self.config.d_model)
        pad = tokenizer.pad_token_id or 0
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            width = len(ids[rows[0]])  # the longest of the batch
            batch_ids = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in rows], device=self.device)
            batch_types = torch.tensor([types[i] + [0] * (width - len(ids[i])) for i in rows], device=self.device)
            mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in rows], device=self.device)
            hidden = self.hidden(batch_ids, mask, token_type_ids=batch_types)
            vectors[rows] = pool(hidden, mask, mode, self.config.normalize_pooled).float().cpu()
        return vectors[0] if single else vectors

    # --- switches and surgery ------------------------------------------------------------------

    def set_fused_attention(self, fused: bool) -> None:
        """Choose the fused kernel (default) or the plain softmax path in every layer."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.fused = fused

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
        if self.encoder is not None:  # it shares the embedding, resized below
            self.encoder.config = self.encoder.config.replace(vocab_size=n)
        self.tok_emb.resize(n)
        if self.lm_head is not None:
            self.lm_head.resize(n)
