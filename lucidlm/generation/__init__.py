"""Generation: samplers and logits processors (pure functions), the token engine with its prompt
cache, and the text API (generate, stream_generate, batch_generate)."""

from .engine import PromptCache, generate_tokens, make_cache
from .processors import make_logits_processors
from .sampler import make_sampler
from .text import GenerationResponse, batch_generate, generate, stream_generate

__all__ = ["GenerationResponse", "PromptCache", "batch_generate", "generate", "generate_tokens", "make_cache",
           "make_logits_processors", "make_sampler", "stream_generate"]
