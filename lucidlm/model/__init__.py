"""The model: layers (norms, positions, attention, MLP), the transformer, its heads, its KV cache
and the probe that looks inside it."""

from .attention import Attention, attention_weights, plain_attention
from .context import ForwardContext
from .kv_cache import KVCache, SlidingKVCache
from .linear import Linear, LMHead, TokenEmbedding, make_linear
from .mask import Mask, attention_mask
from .probe import Probe, Record, probe
from .transformer import Block, Transformer

__all__ = ["Attention", "Block", "ForwardContext", "KVCache", "LMHead", "Linear", "Mask", "Probe", "Record",
           "SlidingKVCache", "TokenEmbedding", "Transformer", "attention_mask", "attention_weights", "make_linear",
           "plain_attention", "probe"]
