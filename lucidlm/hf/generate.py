"""transformers' `model.generate(...)` arguments mapped onto lucidlm's engine.

Each row's real tokens (attention_mask 1) are its prompt; the engine continues all rows at once
(greedy or sampled) and beam search takes one row at a time. The result is laid out as
transformers lays it out: each row as it was given (padding included), then its new tokens, rows
that ended early filled with pad_token_id. An encoder-decoder's rows start with the decoder's
start token instead. Sampling draws from torch's global generator, so torch.manual_seed(n)
repeats a run; it does not repeat transformers' draws, which come from other code.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import LucidError
from ..generation import TokenEngine, make_logits_processors, make_sampler
from ..generation.beam import beam_search
from ..generation.seq2seq import generate_seq2seq
from .config import GENERATION_DEFAULTS

# transformers' arguments lucidlm reads; any other is refused by name, never silently ignored.
KNOWN = ("max_new_tokens", "max_length", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p", "num_beams",
         "repetition_penalty", "eos_token_id", "pad_token_id", "num_return_sequences", "length_penalty",
         "early_stopping", "generation_config", "token_type_ids", "use_cache", "decoder_start_token_id",
         "bos_token_id", "forced_eos_token_id", "output_scores", "return_dict_in_generate", "streamer")


def _settings(defaults: dict[str, Any], explicit: set[str], given: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """The settings this call runs with, and which of them someone chose (the model's
    generation_config.json, an assignment to model.generation_config, a GenerationConfig, an argument)."""
    unknown = sorted(set(given) - set(KNOWN))
    if unknown:
        raise LucidError(f"unsupported generate argument(s): {', '.join(unknown)}")
    if given.get("streamer") is not None or given.get("return_dict_in_generate") or given.get("output_scores"):
        raise LucidError("streamer, output_scores and return_dict_in_generate are not supported: "
                         "lucidlm.stream_generate streams text with each token's log-probabilities")
    out = dict(defaults)
    chosen = set(explicit) | {k for k in GENERATION_DEFAULTS if defaults.get(k) != GENERATION_DEFAULTS[k]}
    config = given.pop("generation_config", None)
    if config is not None:  # a transformers GenerationConfig or a dict
        values = {k: v for k, v in (config if isinstance(config, dict) else vars(config)).items()
                  if k in KNOWN and v is not None}
        out.update(values)
        chosen |= {k for k, v in values.items() if GENERATION_DEFAULTS.get(k) != v}
    out.update({k: v for k, v in given.items() if v is not None})
    chosen |= {k for k, v in given.items() if v is not None}
    return out, chosen


def _new_tokens(s: dict[str, Any], chosen: set[str], prompt_length: int, context: int) -> int:
    """How many tokens to add: max_new_tokens; else max_length minus the prompt, where someone set
    max_length; else transformers 5's default, 20 new tokens (within the context)."""
    if s["max_new_tokens"] is not None:
        return int(s["max_new_tokens"])
    if "max_length" in chosen:
        return int(s["max_length"]) - prompt_length
    return min(20, context - prompt_length)


def _ending(eos: list[int], min_new: int, forced_eos: int | None, limit: int, prompt_length: int):
    """Logits processors for transformers' min_new_tokens (no end token before that many new ones)
    and forced_eos_token_id (the end token forced at the last allowed step); `prompt_length` is the
    row's, since a processor sees the prompt and the tokens so far."""
    def process(history: list[int], logits: torch.Tensor) -> torch.Tensor:
        made = len(history) - prompt_length
        if made < min_new and eos:
            logits = logits.clone()
            logits[eos] = float("-inf")
        if forced_eos is not None and made == limit - 1:
            forced = torch.full_like(logits, float("-inf"))
            forced[forced_eos] = 0.0
            return forced
        return logits
    return process


def token_ids(value: int | Sequence[int] | None) -> list[int]:
    if value is None:
        return []
    return [value] if isinstance(value, int) else [int(v) for v in value]


def _rows(input_ids, attention_mask, device) -> tuple[torch.Tensor, list[list[int]]]:
    """The batch as given (B, T) and each row's real tokens."""
    if input_ids is None:
        raise LucidError("generate needs input_ids (the tokenized prompt)")
    ids = torch.as_tensor(input_ids).to(device)
    if ids.dim() == 1:
        ids = ids[None]
    if attention_mask is None:
        return ids, ids.tolist()
    mask = torch.as_tensor(attention_mask).to(device).bool()
    if mask.shape != ids.shape:
        raise LucidError(f"attention_mask {tuple(mask.shape)} does not match input_ids {tuple(ids.shape)}")
    return ids, [row[keep].tolist() for row, keep in zip(ids, mask)]


def _sampler_and_processors(s: dict[str, Any], window: int):
    sampler = make_sampler(temp=float(s["temperature"]), top_k=int(s["top_k"] or 0), top_p=float(s["top_p"])) \
        if s["do_sample"] else None
    # transformers' repetition penalty looks at every token so far, prompt included
    processors = make_logits_processors(repetition_penalty=float(s["repetition_penalty"]),
                                        window=window) if s["repetition_penalty"] != 1.0 else []
    return sampler, processors


def _laid_out(starts: list[list[int]], new: list[list[int]], pad: int, device) -> torch.Tensor:
    width = max(len(a) + len(b) for a, b in zip(starts, new))
    rows = [a + b + [pad] * (width - len(a) - len(b)) for a, b in zip(starts, new)]
    return torch.tensor(rows, dtype=torch.long, device=device)


def generate(model, defaults: dict[str, Any], explicit: set[str], input_ids=None, attention_mask=None,
             **given: Any) -> torch.Tensor:
    s, chosen = _settings(defaults, explicit, given)
    eos = token_ids(s["eos_token_id"])
    pad = s["pad_token_id"] if s["pad_token_id"] is not None else (eos[0] if eos else 0)
    n_return, beams = int(s["num_return_sequences"]), int(s["num_beams"])
    if n_return < 1 or beams < 1 or (beams > 1 and n_return > beams):
        raise LucidError("num_return_sequences must be >= 1 (and at most num_beams with beam search)")
    if n_return > 1 and beams == 1 and not s["do_sample"]:
        raise LucidError("greedy search gives one sequence per prompt: num_return_sequences > 1 needs "
                         "do_sample=True or num_beams")
    if beams > 1 and s["do_sample"]:
        raise LucidError("beam search with sampling (do_sample=True, num_beams > 1) is not supported")
    if s["do_sample"] and float(s["temperature"]) <= 0:
        raise LucidError("do_sample=True needs a temperature > 0")
    start = s.get("decoder_start_token_id")
    if start is not None and start != model.config.decoder_start_token_id:
        raise LucidError(f"decoder_start_token_id={start}: this model's decoder starts from "
                         f"{model.config.decoder_start_token_id}, which lucidlm does not change")
    min_new = int(s.get("min_new_tokens") or 0)
    ids, prompts = _rows(input_ids, attention_mask, model.device)
    if model.config.is_encoder_decoder:
        return _seq2seq(model, s, chosen, prompts, eos, pad, beams, n_return, min_new)
    given_rows = ids.tolist()
    limit = _new_tokens(s, chosen, ids.shape[1], model.config.context_length)
    if limit < 1:
        raise LucidError(f"no room to generate: the prompt has {ids.shape[1]} tokens and max_length is "
                         f"{s['max_length']} (pass max_new_tokens)")
    if any(not p for p in prompts):
        raise LucidError("a row of input_ids has no real token (its attention_mask is all 0)")
    forced = s["forced_eos_token_id"]
    starts = [row for row in given_rows for _ in range(n_return)]
    if beams > 1:
        if min_new or forced is not None:
            raise LucidError("min_new_tokens and forced_eos_token_id are not supported with beam search")
        new = [h.tokens for prompt in prompts
               for h in beam_search(model, prompt, beams, limit, eos, float(s["length_penalty"]),
                                    s["early_stopping"])[:n_return]]
        # subtle: transformers' beam search fills with `pad_token_id or eos_token_id[0]`, so a pad id
        # of 0 fills with the end token; the same here, so the outputs are the same tensors
        return _laid_out(starts, new, pad or (eos[0] if eos else pad), model.device)
    prompts = [p for p in prompts for _ in range(n_return)]
    sampler, processors = _sampler_and_processors(s, model.config.context_length)
    per_row = [processors + ([_ending(eos, min_new, forced, limit, len(p))] if min_new or forced is not None else [])
               for p in prompts]
    return _laid_out(starts, _continued(model, prompts, sampler, per_row, eos, limit), pad, model.device)


def _continued(model, prompts: list[list[int]], sampler, processors: list[list], eos: list[int],
               limit: int) -> list[list[int]]:
    """Every prompt's new tokens from one engine: up to an end token, `limit` tokens or the context's end."""
    engine = TokenEngine(model, prompts, [sampler] * len(prompts), processors, [None] * len(prompts))
    new: list[list[int]] = [[] for _ in prompts]
    while engine.rows_running:
        step = engine.step()
        if not step:  # the context is full
            break
        for row, token, _ in step:
            new[row].append(token)
            if token in eos or len(new[row]) >= limit:
                engine.finish(row)
    return new


def _seq2seq(model, s: dict[str, Any], chosen: set[str], sources: list[list[int]], eos: list[int], pad: int,
             beams: int, n_return: int, min_new: int) -> torch.Tensor:
    """Each source's decoder output: the start token, then the generated tokens (transformers'
    max_length counts the start token)."""
    if min_new:
        raise LucidError("min_new_tokens is not supported for encoder-decoders")
    limit = _new_tokens(s, chosen, 1, model.config.context_length)
    start = model.config.decoder_start_token_id
    sampler, _ = _sampler_and_processors(s, model.config.context_length)
    if s["repetition_penalty"] != 1.0:
        raise LucidError("repetition_penalty is not supported for encoder-decoders")
    if beams > 1 and n_return > 1:
        raise LucidError("num_return_sequences > 1 with beam search is not supported for encoder-decoders")
    sources = [src for src in sources for _ in range(n_return)]
    new = generate_seq2seq(model, sources, limit, eos, sampler=sampler, num_beams=beams,
                           length_penalty=float(s["length_penalty"]), early_stopping=s["early_stopping"],
                           forced_eos_token_id=s["forced_eos_token_id"], pad_id=pad)
    return _laid_out([[start]] * len(new), new, pad, model.device)
