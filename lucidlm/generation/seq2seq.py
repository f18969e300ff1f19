"""Generation for encoder-decoders: encode the sources once, then decode from the decoder's start
token, greedily, by sampling (the token engine, every row at once) or by beam search (one source
at a time). `translate` is the same on text, through the model's tokenizer.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..errors import LucidError
from .beam import beam_search
from .engine import PromptCache, TokenEngine
from .sampler import Sampler


def encode_sources(model, sources: Sequence[Sequence[int]], pad_id: int = 0):
    """Source rows, padded on the right to one length -> the model's EncoderOutput (B, S, C)."""
    if not sources or any(len(s) == 0 for s in sources):
        raise LucidError("every source needs at least one token")
    longest = max(len(s) for s in sources)
    if longest > model.config.context_length:
        raise LucidError(f"a source has {longest} tokens; the model's context is {model.config.context_length}")
    ids = torch.tensor([list(s) + [pad_id] * (longest - len(s)) for s in sources], device=model.device)
    mask = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in sources], device=model.device)
    return model.encode_source(ids, mask)


def forced_eos(token: int, max_tokens: int):
    """A logits processor that leaves only `token` possible at the last allowed step (BART's
    forced_eos_token_id): a translation cut at the limit still ends properly."""
    def process(history: list[int], logits: torch.Tensor) -> torch.Tensor:
        if len(history) == max_tokens:  # history: the start token and max_tokens - 1 generated
            forced = torch.full_like(logits, float("-inf"))
            forced[token] = 0.0
            return forced
        return logits
    return process


@torch.no_grad()
def generate_seq2seq(model, sources: Sequence[Sequence[int]], max_tokens: int = 64,
                     eos_token_ids: Sequence[int] = (), sampler: Sampler | None = None, seed: int | None = None,
                     num_beams: int = 1, length_penalty: float = 1.0, early_stopping: bool | str = False,
                     forced_eos_token_id: int | None = None, pad_id: int = 0) -> list[list[int]]:
    """Each source's generated ids (the end token included when one was generated). Greedy by
    default; a sampler samples; num_beams > 1 searches beams."""
    config = model.config
    if not config.is_encoder_decoder:
        raise LucidError("this model has no encoder: generate continues a prompt instead")
    if config.decoder_start_token_id is None:
        raise LucidError("the model does not say which token its decoder starts from (decoder_start_token_id)")
    if max_tokens < 1:
        raise LucidError("max_tokens must be at least 1")
    if num_beams > 1 and sampler is not None:
        raise LucidError("beam search keeps the most probable beams: it takes no sampler")
    start, eos = config.decoder_start_token_id, set(eos_token_ids)
    encoded = encode_sources(model, sources, pad_id)
    if num_beams > 1:
        return [beam_search(model, [start], num_beams, max_tokens, sorted(eos), length_penalty, early_stopping,
                            forced_eos_token_id, encoded.select(torch.tensor([row], device=model.device)))[0].tokens
                for row in range(len(sources))]
    n = len(sources)
    prompt_cache = PromptCache(model, capacity=min(config.context_length, max_tokens + 1), batch_size=n)
    prompt_cache.cache.set_source(encoded)
    processors = [[forced_eos(forced_eos_token_id, max_tokens)] if forced_eos_token_id is not None else []] * n
    generators = [torch.Generator().manual_seed(seed + row) if seed is not None else None for row in range(n)]
    engine = TokenEngine(model, [[start]] * n, [sampler] * n, processors, generators, prompt_cache)
    outputs: list[list[int]] = [[] for _ in range(n)]
    while True:
        step = engine.step()
        if not step:
            return outputs
        for row, token, _ in step:
            outputs[row].append(token)
            if token in eos or len(outputs[row]) >= max_tokens:
                engine.finish(row)
