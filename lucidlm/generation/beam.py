"""Beam search: keep the num_beams most probable continuations at each step, for decoders and
encoder-decoders alike (the source, if any, sits on the cache).

Follows transformers' `generate(num_beams=...)` step for step, so the same model gives the same
output: 2 * num_beams candidates per step (more with several end tokens), a finished hypothesis
scored by its summed log-probability / generated length ** length_penalty, and its stopping rule
(early_stopping True: stop once num_beams hypotheses are finished; False: once no running beam can
beat the worst finished one at its current length; "never": at its best possible length).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import LucidError
from .engine import make_cache

NEVER = -1.0e9  # transformers' stand-in for minus infinity in beam scores


@dataclass
class Hypothesis:
    tokens: list[int]  # the generated tokens (the prompt not included), the end token included
    score: float  # summed log-probability / len(tokens) ** length_penalty


@torch.no_grad()
def beam_search(model, prompt_ids: Sequence[int], num_beams: int = 4, max_tokens: int = 64,
                eos_token_ids: Sequence[int] = (), length_penalty: float = 1.0, early_stopping: bool | str = False,
                forced_eos_token_id: int | None = None, encoder_output=None) -> list[Hypothesis]:
    """The num_beams best hypotheses, best first. prompt_ids: what the decoder starts from (an
    encoder-decoder's decoder start token); encoder_output: one source row (encode_source's output)."""
    if num_beams < 1 or max_tokens < 1:
        raise LucidError("beam search needs num_beams >= 1 and max_tokens >= 1")
    if early_stopping not in (True, False, "never"):
        raise LucidError(f"early_stopping must be true, false or 'never' (got {early_stopping!r})")
    prompt = list(prompt_ids)
    room = model.config.context_length - len(prompt)
    if room < 1:
        raise LucidError(f"the prompt has {len(prompt)} tokens: no room left in the context of {model.config.context_length}")
    max_tokens = min(max_tokens, room)  # as greedy decoding, stop where the context ends
    eos = sorted(set(eos_token_ids))
    prompt_len, max_length = len(prompt), len(prompt) + max_tokens
    keep = max(2, 1 + len(eos)) * num_beams  # candidates per step: enough to go on if some end
    cache = make_cache(model, num_beams, capacity=min(model.config.context_length, max_length))
    if encoder_output is not None:
        cache.set_source(encoder_output.select(torch.zeros(num_beams, dtype=torch.long,
                                                           device=encoder_output.states.device)))
    logits = model(torch.tensor([prompt] * num_beams, device=model.device), cache=cache, logits_for="last")[:, -1]

    running = [list(prompt) for _ in range(num_beams)]
    running_scores = torch.full((num_beams,), NEVER)
    running_scores[0] = 0.0  # all beams hold the same prompt: only the first may expand at first
    finished: list[list[int]] = [[] for _ in range(num_beams)]
    finished_scores = torch.full((num_beams,), NEVER)
    is_finished = torch.zeros(num_beams, dtype=torch.bool)
    improvable = True
    eos_tensor = torch.tensor(eos, dtype=torch.long)
    cur_len = prompt_len
    while True:
        log_probs = logits.float().log_softmax(dim=-1).cpu()  # (num_beams, V)
        if forced_eos_token_id is not None and cur_len == max_length - 1:
            log_probs = torch.full_like(log_probs, float("-inf"))
            log_probs[:, forced_eos_token_id] = 0.0
        vocab = log_probs.shape[-1]
        top_scores, top_index = torch.topk((log_probs + running_scores[:, None]).reshape(-1), k=keep)
        parents, tokens = top_index // vocab, top_index % vocab
        candidates = [running[p] + [t] for p, t in zip(parents.tolist(), tokens.tolist())]
        ends = torch.isin(tokens, eos_tensor) | (cur_len + 1 >= max_length)  # (keep,)

        # The best num_beams candidates that did not end go on.
        going_scores = top_scores + ends.float() * NEVER
        going = torch.topk(going_scores, k=num_beams).indices
        running = [candidates[i] for i in going.tolist()]
        running_scores = going_scores[going]

        # Candidates among the first num_beams that ended join the finished ones if they score better.
        just_ended = ends & (torch.arange(keep) < num_beams)
        ended_scores = top_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        if bool(is_finished.all()) and early_stopping is True:
            ended_scores = ended_scores + NEVER
        if not improvable:
            ended_scores = ended_scores + NEVER
        ended_scores = ended_scores + (~just_ended).float() * NEVER
        merged = torch.cat((finished_scores, ended_scores))
        best = torch.topk(merged, k=num_beams).indices.tolist()
        pool = finished + candidates
        merged_finished = torch.cat((is_finished, just_ended))
        finished, finished_scores, is_finished = [pool[i] for i in best], merged[best], merged_finished[best]

        cur_len += 1
        # Could a running beam still beat the worst finished hypothesis?
        length = max_length - prompt_len if early_stopping == "never" and length_penalty > 0 else cur_len - prompt_len
        best_possible = running_scores[0] / (length ** length_penalty)
        worst = torch.where(is_finished, finished_scores.min(), torch.tensor(NEVER))
        improvable = improvable and bool((best_possible > worst).any())
        if not improvable or (bool(is_finished.all()) and early_stopping is True) or bool(ends.all()):
            break
        cache.keep_rows(parents[going].tolist())
        last = torch.tensor([[seq[-1]] for seq in running], device=model.device)
        logits = model(last, cache=cache, logits_for="last")[:, -1]
    return [Hypothesis(seq[prompt_len:], float(score)) for seq, score in zip(finished, finished_scores)]
