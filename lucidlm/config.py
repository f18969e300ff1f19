"""Config: one frozen dataclass that describes every supported transformer by its mechanisms.

No field names a model. GPT-2, Llama/SmolLM2, Qwen2 and Mistral differ in a handful of switches
(norm kind, position kind, gated MLP, biases, sliding window); FAMILIES lists those switches and
PRESETS gives complete small configs for training from scratch.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, check_known_fields

NORM_KINDS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh", "silu", "relu")
POSITION_KINDS = ("learned", "sinusoidal", "rope", "relative", "none")
ROPE_SCALINGS = ("none", "linear", "llama3", "longrope")
HEADS = ("lm", "mlm", "classify", "none")  # next-token logits; masked-LM logits (BERT); one label per text; none: the hidden states
POOLINGS = ("none", "cls", "mean", "max")
# Which token head "classify" reads: the first ([CLS], BERT), or the last real one (a decoder's, the
# only token that has seen the whole text: GPT2ForSequenceClassification, the book's chapter 6).
CLASSIFY_TOKENS = ("first", "last")
SINUSOIDAL_LAYOUTS = ("interleaved", "halves")  # sin/cos in alternate channels (Vaswani), or sin | cos (Marian)
# Our fused matrices and their parts, in the order the parts' output rows are stacked.
FUSED_PARTS = {"attn.qkv": ("q", "k", "v"), "mlp.up": ("gate", "up"), "cross_attn.kv": ("k", "v")}


@dataclass(frozen=True)
class Config:
    """Sizes and switches of a decoder (or encoder) transformer. Defaults: a pre-norm RoPE decoder."""

    vocab_size: int = 32000
    context_length: int = 2048
    d_model: int = 512  # width of the residual stream
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int | None = None  # None: n_heads (MHA); 1: MQA; a divisor of n_heads: GQA
    head_dim: int | None = None  # None: d_model // n_heads
    d_ff: int | None = None  # MLP hidden width; None: 4 * d_model
    norm: str = "rmsnorm"
    norm_placement: str = "pre"  # "pre": x + f(norm(x)); "post": norm(x + f(x))
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorm's additive bias
    final_norm: bool = True  # a norm after the last block (pre-norm models have one)
    activation: str = "silu"
    gated_mlp: bool = True  # act(x W_gate) * (x W_up) instead of act(x W_up)
    qkv_bias: bool = False  # bias on the query/key/value projections
    bias: bool = False  # bias on the attention output and MLP projections
    position: str = "rope"
    rope_base: float = 10000.0
    rope_scaling: str = "none"
    rope_scaling_factor: float = 1.0
    rope_low_freq_factor: float = 1.0  # llama3 scaling only
    rope_high_freq_factor: float = 4.0  # llama3 scaling only
    rope_original_context_length: int = 8192  # llama3 scaling only
    relative_max_distance: int = 128  # "relative": distances are clipped to +-this
    sliding_window: int | None = None  # a key is visible if query_pos - key_pos < sliding_window
    sliding_window_layers: tuple[int, ...] | None = None  # None: every layer, when sliding_window is set
    causal: bool = True
    tie_embeddings: bool = False  # the LM head reuses the token embedding matrix
    token_types: int = 0  # segment (token type) embeddings added to the tokens', BERT's A/B; 0: none
    embedding_norm: bool = False  # a norm right after the embeddings (BERT)
    head: str = "lm"  # what model(ids) returns: see HEADS
    pooler: bool = False  # BERT's pooler: dense + tanh on the first token (model.pool)
    n_labels: int = 2  # head "classify": how many classes
    classify_token: str = "first"  # head "classify": which token it reads, see CLASSIFY_TOKENS
    classifier_bias: bool = True  # head "classify": a bias per label (BERT's classifier; decoders' `score` has none)
    pooling: str = "none"  # how model.encode makes one vector per text: see POOLINGS
    normalize_pooled: bool = False  # L2-normalise those vectors
    encoder_layers: int = 0  # > 0: an encoder-decoder; the encoder has this many blocks, n_layers is the decoder's
    decoder_start_token_id: int | None = None  # an encoder-decoder's decoder starts from this token
    embedding_scale: float = 1.0  # token embeddings are multiplied by this (sqrt(d_model) in Marian)
    sinusoidal_layout: str = "interleaved"  # see SINUSOIDAL_LAYOUTS
    head_bias: bool = False  # a bias per token on the LM head's logits (BART's final_logits_bias)
    dropout: float = 0.0  # on embeddings and residual branches, in training
    attention_dropout: float = 0.0  # on attention weights, in training
    rope_dim: int | None = None  # channels of each head that rotate (partial rotary); None: all head_dim
    rope_short_factors: tuple[float, ...] | None = None  # longrope: wavelength stretch per channel pair, short contexts
    rope_long_factors: tuple[float, ...] | None = None  # longrope: the same beyond rope_original_context_length
    rope_attention_factor: float = 1.0  # cos and sin are multiplied by this (longrope's magnitude correction)
    rope_local_base: float | None = None  # sliding-window layers rotate with this base, unscaled; None: as the others
    attention_scale: float | None = None  # q.k is multiplied by this; None: 1 / sqrt(head_dim)
    attn_logit_softcap: float | None = None  # attention logits become cap * tanh(logits / cap); None: not capped
    final_logit_softcap: float | None = None  # the LM head's logits likewise
    sandwich_norm: bool = False  # pre-norm blocks also norm each branch's output before adding it
    qk_norm: bool = False  # the config's norm over each head's queries and keys, before rotation
    embedding_scale_in_dtype: bool = False  # round embedding_scale to the activations' dtype first

    def __post_init__(self) -> None:
        # Resolve the None defaults once, so every reader sees concrete sizes.
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.head_dim is None and isinstance(self.n_heads, int) and self.n_heads > 0:
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        if isinstance(self.sliding_window_layers, list):
            object.__setattr__(self, "sliding_window_layers", tuple(self.sliding_window_layers))
        for name in ("rope_short_factors", "rope_long_factors"):  # JSON gives lists; a frozen config keeps tuples
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"Config.{name}: {why} (got {getattr(self, name)!r})")

        for name in ("vocab_size", "context_length", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "head_dim", "d_ff", "relative_max_distance", "rope_original_context_length"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, name,
                 "must be a positive integer")
        need(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", f"must divide n_heads={self.n_heads}")
        need(self.norm in NORM_KINDS, "norm", f"must be one of {NORM_KINDS}")
        need(self.norm_placement in NORM_PLACEMENTS, "norm_placement", f"must be one of {NORM_PLACEMENTS}")
        need(self.activation in ACTIVATIONS, "activation", f"must be one of {ACTIVATIONS}")
        need(self.position in POSITION_KINDS, "position", f"must be one of {POSITION_KINDS}")
        need(self.rope_scaling in ROPE_SCALINGS, "rope_scaling", f"must be one of {ROPE_SCALINGS}")
        need(self.head in HEADS, "head", f"must be one of {HEADS}")
        need(isinstance(self.n_labels, int) and not isinstance(self.n_labels, bool) and self.n_labels >= 1,
             "n_labels", "must be a positive integer")
        need(self.pooling in POOLINGS, "pooling", f"must be one of {POOLINGS}")
        need(self.classify_token in CLASSIFY_TOKENS, "classify_token", f"must be one of {CLASSIFY_TOKENS}")
        need(isinstance(self.classifier_bias, bool), "classifier_bias", "must be true or false")
        if self.pooler:  # BERT's pooler is trained on the first token
            need(self.classify_token == "first", "classify_token", "must be first with a pooler")
        need(self.sinusoidal_layout in SINUSOIDAL_LAYOUTS, "sinusoidal_layout", f"must be one of {SINUSOIDAL_LAYOUTS}")
        need(isinstance(self.encoder_layers, int) and not isinstance(self.encoder_layers, bool)
             and self.encoder_layers >= 0, "encoder_layers", "must be a whole number >= 0")
        if self.encoder_layers:
            need(self.causal, "causal", "must be true in an encoder-decoder (its decoder generates)")
            need(self.head == "lm", "head", "must be lm in an encoder-decoder")
        if self.decoder_start_token_id is not None:
            need(isinstance(self.decoder_start_token_id, int) and 0 <= self.decoder_start_token_id < self.vocab_size,
                 "decoder_start_token_id", "must be a token id of the vocabulary")
        need(isinstance(self.token_types, int) and not isinstance(self.token_types, bool) and self.token_types >= 0,
             "token_types", "must be a whole number >= 0")
        for name in ("norm_eps", "rope_base", "rope_scaling_factor", "embedding_scale"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and math.isfinite(value) and value > 0, name,
                 "must be a positive number")
        if self.position == "rope":
            need(self.head_dim % 2 == 0, "head_dim", "must be even for rotary positions")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and 0.0 <= value < 1.0, name, "must be in [0, 1)")
        if self.sliding_window is not None:
            need(isinstance(self.sliding_window, int) and self.sliding_window > 0, "sliding_window",
                 "must be a positive integer or None")
        if self.sliding_window_layers is not None:
            need(self.sliding_window is not None, "sliding_window_layers", "needs sliding_window to be set")
            need(all(isinstance(i, int) and 0 <= i < self.n_layers for i in self.sliding_window_layers),
                 "sliding_window_layers", f"must list layer indices in [0, {self.n_layers})")
        for name in ("norm_bias", "final_norm", "gated_mlp", "qkv_bias", "bias", "causal", "tie_embeddings",
                     "embedding_norm", "pooler", "normalize_pooled", "head_bias", "sandwich_norm", "qk_norm",
                     "embedding_scale_in_dtype"):
            need(isinstance(getattr(self, name), bool), name, "must be true or false")
        self._validate_rope_and_caps(need)

    def _validate_rope_and_caps(self, need) -> None:
        """The rotary variants, the attention scale, soft caps and the norms around each branch."""
        def positive(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0

        for name in ("rope_local_base", "attention_scale", "attn_logit_softcap", "final_logit_softcap"):
            if getattr(self, name) is not None:
                need(positive(getattr(self, name)), name, "must be a positive number or None")
        need(positive(self.rope_attention_factor), "rope_attention_factor", "must be a positive number")
        if self.rope_dim is not None:
            need(isinstance(self.rope_dim, int) and not isinstance(self.rope_dim, bool) and 0 < self.rope_dim
                 <= self.head_dim and self.rope_dim % 2 == 0, "rope_dim", "must be an even number in [2, head_dim]")
        pairs = self.rotary_dim // 2
        for name in ("rope_short_factors", "rope_long_factors"):
            factors = getattr(self, name)
            if self.rope_scaling == "longrope":
                need(isinstance(factors, tuple) and len(factors) == pairs and all(positive(f) for f in factors),
                     name, f"must list {pairs} positive numbers (one per rotated channel pair) for longrope")
            else:
                need(factors is None, name, "is for rope_scaling longrope only")
        if self.sandwich_norm:
            need(self.norm_placement == "pre" and not self.encoder_layers, "sandwich_norm",
                 "needs pre-norm blocks without cross-attention")

    # --- derived facts -------------------------------------------------------------------------

    def uses_sliding_window(self, layer: int) -> bool:
        if self.sliding_window is None:
            return False
        return self.sliding_window_layers is None or layer in self.sliding_window_layers

    def part_rows(self, module: str) -> dict[str, tuple[int, int]]:
        """The output rows (start, stop) of each part of one of our fused matrices ("attn.qkv",
        "mlp.up", "cross_attn.kv"), in the order FUSED_PARTS stacks them."""
        sizes = {"q": self.n_heads * self.head_dim, "k": self.n_kv_heads * self.head_dim,
                 "v": self.n_kv_heads * self.head_dim, "gate": self.d_ff, "up": self.d_ff}
        rows, start = {}, 0
        for part in FUSED_PARTS[module]:
            rows[part] = (start, start + sizes[part])
            start += sizes[part]
        return rows

    @property
    def rope_switch_length(self) -> int | None:
        """Longrope's switch: a sequence longer than this rotates every key with the long factors,
        so keys cached while it was shorter go stale (transformers recomputes them; so does the
        engine). None: rotary angles never depend on the sequence's length."""
        if self.position == "rope" and self.rope_scaling == "longrope":
            return self.rope_original_context_length
        return None

    @property
    def rotary_dim(self) -> int:
        """Channels of each head that rotary positions turn (the first ones; the rest pass through)."""
        return self.rope_dim if self.rope_dim is not None else self.head_dim

    @property
    def is_encoder_decoder(self) -> bool:
        return self.encoder_layers > 0

    def encoder_config(self) -> "Config":
        """The encoder of an encoder-decoder: the same widths, bidirectional, its own depth, no head."""
        return self.replace(n_layers=self.encoder_layers, encoder_layers=0, causal=False, head="none",
                            head_bias=False, decoder_start_token_id=None, sliding_window=None,
                            sliding_window_layers=None)

    @property
    def all_layers_slide(self) -> bool:
        """True when every layer is local, so a cache may forget tokens beyond the window."""
        return all(self.uses_sliding_window(i) for i in range(self.n_layers))

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["sliding_window_layers"] is not None:
            data["sliding_window_layers"] = list(data["sliding_window_layers"])
        for name in ("rope_short_factors", "rope_long_factors"):
            if data[name] is not None:
                data[name] = list(data[name])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        check_known_fields(cls, data, "Config: unknown field(s)")
        try:
            return cls(**data)
        except TypeError as exc:  # e.g. a string where a number belongs, caught by comparisons
            raise ConfigError(f"Config: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def replace(self, **changes: Any) -> "Config":
        """A copy with these fields changed. Sizes that followed their defaults follow the change:
        with n_kv_heads == n_heads, head_dim == d_model // n_heads and d_ff == 4 * d_model, a new
        n_heads or d_model recomputes them (a [model] table may set n_heads = 2 on a preset)."""
        fields = {**self.to_dict(), **changes}
        followed = {"n_kv_heads": self.n_kv_heads == self.n_heads,
                    "head_dim": self.head_dim == self.d_model // self.n_heads,
                    "d_ff": self.d_ff == 4 * self.d_model}
        for name, follows in followed.items():
            if follows and name not in changes:
                fields[name] = None
        return Config.from_dict(fields)


# The switches that make each family; sizes come from the file's metadata or a preset.
FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": dict(norm="layernorm", norm_bias=True, activation="gelu_tanh", gated_mlp=False,
                 qkv_bias=True, bias=True, position="learned", tie_embeddings=True),
    "llama": dict(norm="rmsnorm", activation="silu", gated_mlp=True, qkv_bias=False, bias=False,
                  position="rope"),
    "qwen2": dict(norm="rmsnorm", activation="silu", gated_mlp=True, qkv_bias=True, bias=False,
                  position="rope"),
    "mistral": dict(norm="rmsnorm", activation="silu", gated_mlp=True, qkv_bias=False, bias=False,
                    position="rope"),
    # Phi-3 computes what Llama does (its files fuse q|k|v and gate|up, as we do); longrope and
    # partial rotation come from its config.json.
    "phi3": dict(norm="rmsnorm", activation="silu", gated_mlp=True, qkv_bias=False, bias=False, position="rope"),
    # Gemma 2: each branch normed before and after (sandwich), embeddings scaled by sqrt(d_model) in
    # the model's dtype, tanh-gated GELU, a tied head; soft caps and the attention scale come from
    # config.json. Gemma 3 drops the attention cap for an RMSNorm on each head's queries and keys.
    "gemma2": dict(norm="rmsnorm", activation="gelu_tanh", gated_mlp=True, qkv_bias=False, bias=False,
                   position="rope", sandwich_norm=True, embedding_scale_in_dtype=True, tie_embeddings=True),
    "gemma3": dict(norm="rmsnorm", activation="gelu_tanh", gated_mlp=True, qkv_bias=False, bias=False,
                   position="rope", sandwich_norm=True, embedding_scale_in_dtype=True, tie_embeddings=True,
                   qk_norm=True),
    # An encoder: bidirectional, post-norm, learned positions, segment embeddings, a norm after them.
    "bert": dict(norm="layernorm", norm_bias=True, norm_placement="post", final_norm=False, activation="gelu",
                 gated_mlp=False, qkv_bias=True, bias=True, position="learned", causal=False, tie_embeddings=True,
                 embedding_norm=True, token_types=2),
    # Encoder-decoders (decoders with cross-attention, post-norm): BART learns its positions and
    # norms the embeddings; Marian adds fixed sin | cos waves to embeddings scaled by sqrt(d_model).
    "bart": dict(norm="layernorm", norm_bias=True, norm_placement="post", final_norm=False, activation="gelu",
                 gated_mlp=False, qkv_bias=True, bias=True, position="learned", tie_embeddings=True,
                 embedding_norm=True, head_bias=True),
    # mBART: BART with pre-norm blocks and a norm after each stack (trains more easily from scratch).
    "mbart": dict(norm="layernorm", norm_bias=True, norm_placement="pre", final_norm=True, activation="gelu",
                  gated_mlp=False, qkv_bias=True, bias=True, position="learned", tie_embeddings=True,
                  embedding_norm=True, head_bias=True),
    "marian": dict(norm="layernorm", norm_bias=True, norm_placement="post", final_norm=False, activation="silu",
                   gated_mlp=False, qkv_bias=True, bias=True, position="sinusoidal", sinusoidal_layout="halves",
                   tie_embeddings=True, head_bias=True),
}

# Complete configs for training from scratch (vocab_size is replaced by the tokenizer's).
PRESETS: dict[str, Config] = {
    # nanoGPT's CPU "baby GPT" on characters: 4 layers, 4 heads, width 128, context 64, no biases.
    "shakespeare-char": Config(vocab_size=65, context_length=64, d_model=128, n_layers=4, n_heads=4,
                               norm="layernorm", norm_bias=False, activation="gelu", gated_mlp=False,
                               position="learned", tie_embeddings=True),
    # A small GPT for BPE corpora: 6 layers, width 384, context 256.
    "small-bpe": Config(vocab_size=4096, context_length=256, d_model=384, n_layers=6, n_heads=6,
                        norm="layernorm", norm_bias=False, activation="gelu", gated_mlp=False,
                        position="learned", tie_embeddings=True),
    # A tiny Llama-shaped model (RMSNorm, RoPE, GQA, SwiGLU) for experiments.
    "tiny-llama": Config(vocab_size=4096, context_length=256, d_model=256, n_layers=4, n_heads=8,
                         n_kv_heads=2, d_ff=688, tie_embeddings=True),
    # A small BERT (bidirectional, post-norm, segments) with the masked-LM head, for --objective mlm.
    "tiny-bert": Config(vocab_size=2048, context_length=128, d_model=128, n_layers=4, n_heads=4, d_ff=512,
                        head="mlm", **FAMILIES["bert"]),
    # The course's femto and pico GPTs: word tokens whose embeddings are points in a plane (d_model 2),
    # so `lucidlm embeddings` draws the model's own coordinates, no projection. pico's 3 heads see
    # 2 dimensions each (head_dim 2: queries and keys are points in a plane too).
    # subtle: RMSNorm, not LayerNorm. LayerNorm of 2 numbers subtracts their mean and leaves +-(1, -1)
    # whatever they were (measured on data/friends.txt: 2.95 nats against 1.42). RMSNorm keeps the
    # direction. An untied head with a bias per token leaves the plane free for context
    # (2.06 nats tied).
    "femto": Config(vocab_size=64, context_length=16, d_model=2, n_layers=1, n_heads=1, norm="rmsnorm",
                    activation="gelu", gated_mlp=False, position="learned", head_bias=True),
    "pico": Config(vocab_size=64, context_length=16, d_model=2, n_layers=3, n_heads=3, head_dim=2, norm="rmsnorm",
                   activation="gelu", gated_mlp=False, position="learned", head_bias=True),
    # A small translator in mBART's layout: 3 encoder and 3 decoder blocks, width 128, shared
    # embeddings. Pre-norm: BART's post-norm blocks often stall for hundreds of steps from scratch.
    "tiny-translator": Config(vocab_size=512, context_length=64, d_model=128, n_layers=3, encoder_layers=3,
                              n_heads=4, d_ff=512, **FAMILIES["mbart"]),
}
