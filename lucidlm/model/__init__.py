"""The model: layers (norms, positions, attention, MLP), the transformer and its KV cache."""

from .attention import Attention, plain_attention
from .kv_cache import KVCache, SlidingKVCache
from .mask import attention_mask
from .transformer import Block, Transformer

__all__ = ["Attention", "Block", "KVCache", "SlidingKVCache", "Transformer", "attention_mask", "plain_attention"]
