"""Generation: samplers and logits processors (pure functions), GenerationSettings (validated once),
the token engine with its prompt cache, and the text API (stream_generate, generate,
stream_batch_generate, batch_generate)."""

from .engine import PromptCache, TokenEngine, generate_tokens, make_cache
from .settings import GenerationSettings, make_logits_processors, make_sampler
from .text import GenerationResponse, batch_generate, generate, stream_batch_generate, stream_generate

__all__ = ["GenerationResponse", "GenerationSettings", "PromptCache", "TokenEngine", "batch_generate", "generate",
           "generate_tokens", "make_cache", "make_logits_processors", "make_sampler", "stream_batch_generate",
           "stream_generate"]
