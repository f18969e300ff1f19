"""Scoring token ids with a causal model: the log-probability of a continuation given a context
(one pair, or many padded into batches), and the rolling-window log-likelihood of a long token
list with its perplexity, nats per token and bits per byte. The pair scoring follows
lm-evaluation-harness (docs/model_guide.md: loglikelihood -> (logprob, is_greedy)); the rolling
windows follow Hugging Face's strided perplexity (https://huggingface.co/docs/transformers/perplexity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import torch

from ..errors import LucidError
from ..generation.text import check_generates

LOGIT_ROWS = 1024  # positions turned into logits at once: 1024 x 49152 float32 is 200 MB


class Score(NamedTuple):
    """What lm-eval's loglikelihood returns for one (context, continuation) pair."""

    logprob: float  # the sum of the continuation tokens' log-probabilities, in nats
    is_greedy: bool  # every continuation token is the most likely next token


def _checked_pair(context: Sequence[int], continuation: Sequence[int], limit: int) -> tuple[list[int], int]:
    """The model's input for one pair (cut on the left to the context length) and how many of
    its last positions predict the continuation."""
    context, continuation = [int(t) for t in context], [int(t) for t in continuation]
    if not context:
        raise LucidError("the context is empty: the first continuation token needs at least one token before it "
                         "(lm-eval gives the BOS or EOS token)")
    if not continuation:
        raise LucidError("the continuation is empty: there is nothing to score")
    if len(continuation) > limit:
        raise LucidError(f"the continuation has {len(continuation)} tokens, more than the model's context of {limit}")
    # The last continuation token is only a target, never an input; as lm-eval does, the oldest
    # context tokens go first when the whole does not fit.
    return (context + continuation)[-(limit + 1):-1], len(continuation)


@torch.inference_mode()
def score_batch(model, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 16,
                padding: str = "right") -> list[Score]:
    """Score many (context ids, continuation ids) pairs: rows of similar length are padded into
    batches of at most batch_size (padding "right" or "left", hidden by the attention mask), and
    logits are computed only where a continuation token is predicted."""
    check_generates(model)
    if batch_size < 1:
        raise LucidError(f"batch size must be at least 1 (got {batch_size})")
    if padding not in ("right", "left"):
        raise LucidError(f"padding is 'right' or 'left' (got {padding!r})")
    limit = model.config.context_length
    rows = [_checked_pair(c, x, limit) for c, x in pairs]
    targets = [[int(t) for t in x] for _, x in pairs]
    # Longest first, so each batch pads little (lm-eval's order too).
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    scores: list[Score | None] = [None] * len(rows)
    for start in range(0, len(order), batch_size):
        chosen = order[start:start + batch_size]
        width = max(len(rows[i][0]) for i in chosen)
        ids = torch.zeros(len(chosen), width, dtype=torch.long)  # (B, T); 0 is any id: padding is masked
        mask = torch.zeros(len(chosen), width, dtype=torch.long)  # (B, T) 1 = real token
        picks = torch.zeros(len(chosen), width, dtype=torch.bool)  # (B, T) positions that predict a target
        for b, i in enumerate(chosen):
            inputs, n = rows[i]
            at = 0 if padding == "right" else width - len(inputs)
            ids[b, at:at + len(inputs)] = torch.tensor(inputs)
            mask[b, at:at + len(inputs)] = 1
            picks[b, at + len(inputs) - n:at + len(inputs)] = True
        logits = model(ids.to(model.device), attention_mask=mask.to(model.device),
                       logits_for=picks.to(model.device))  # (N, V), row by row, positions in order
        logprobs = logits.float().log_softmax(dim=-1)  # float32 even for a bfloat16 model
        wanted = torch.tensor([t for i in chosen for t in targets[i]], device=logprobs.device)  # (N,)
        token_logprobs = logprobs.gather(1, wanted[:, None])[:, 0]  # (N,)
        greedy = logprobs.argmax(dim=-1) == wanted  # (N,)
        offset = 0
        for i in chosen:
            n = rows[i][1]
            scores[i] = Score(float(token_logprobs[offset:offset + n].double().sum()),
                              bool(greedy[offset:offset + n].all()))
            offset += n
    return scores  # type: ignore[return-value]


def score(model, context_ids: Sequence[int], continuation_ids: Sequence[int]) -> Score:
    """(log P(continuation | context), is the continuation the greedy one) for one pair."""
    return score_batch(model, [(context_ids, continuation_ids)])[0]


@dataclass(frozen=True)
class Rolling:
    """The log-likelihood of a token list, each token but the first scored once."""

    logprob: float  # total, in nats
    tokens: int  # how many tokens were scored
    windows: int  # how many forward passes it took

    @property
    def nats_per_token(self) -> float:
        return -self.logprob / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_token)


def check_window(model, window: int | None, stride: int | None) -> tuple[int, int]:
    """(window, stride) with their defaults: the model's context, half of it."""
    limit = model.config.context_length
    window = limit if window is None else window
    if not 2 <= window <= limit:
        raise LucidError(f"--window must be between 2 and the model's context of {limit} (got {window})")
    stride = max(1, window // 2) if stride is None else stride
    if not 1 <= stride < window:
        # stride == window would leave each window's first token without context and unscored
        raise LucidError(f"--stride must be at least 1 and less than the window of {window} (got {stride})")
    return window, stride


@torch.inference_mode()
def rolling_loglikelihood(model, ids: Sequence[int], window: int | None = None, stride: int | None = None,
                          progress: Callable[[int], None] | None = None) -> Rolling:
    """Hugging Face's strided scheme: windows of `window` tokens start every `stride` tokens; each
    window scores only the tokens that the one before it did not, so every token after the first
    is scored exactly once, with at least window - stride tokens of context (the first window's
    tokens with what precedes them). progress(n) is called with the tokens each window scored."""
    check_generates(model)
    window, stride = check_window(model, window, stride)
    ids = [int(t) for t in ids]
    if len(ids) < 2:
        raise LucidError(f"need at least 2 tokens to score one with context (got {len(ids)})")
    total, scored, windows, previous_end = 0.0, 0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        first = max(previous_end, begin + 1)  # the window's first token has nothing before it
        # Input ids[begin:end-1]: the logits at position p predict the token at p + 1; the last
        # token is only a target, so it need not go in.
        inputs = torch.tensor([ids[begin:end - 1]], device=model.device)  # (1, T)
        hidden = model.hidden(inputs)[0, first - 1 - begin:]  # (n, C): the positions predicting ids[first:end]
        targets = torch.tensor(ids[first:end], device=model.device)  # (n,)
        for at in range(0, len(targets), LOGIT_ROWS):
            logprobs = model.lm_head(hidden[at:at + LOGIT_ROWS]).float().log_softmax(dim=-1)  # (n, V)
            total += float(logprobs.gather(1, targets[at:at + LOGIT_ROWS, None]).double().sum())
        scored += end - first
        windows += 1
        previous_end = end
        if progress is not None:
            progress(end - first)
        if end == len(ids):
            break
    return Rolling(total, scored, windows)


@dataclass(frozen=True)
class Perplexity:
    """A text's perplexity figures; bits per byte count the UTF-8 bytes of the scored tokens, so
    models with different tokenizers compare."""

    rolling: Rolling
    tokens_read: int  # tokens of the text (after --max-tokens), the unscored first one included
    bytes: int  # UTF-8 bytes of the scored tokens
    window: int
    stride: int

    @property
    def bits_per_byte(self) -> float:
        return -self.rolling.logprob / math.log(2) / self.bytes


def text_perplexity(model, tokenizer, text: str, window: int | None = None, stride: int | None = None,
                    max_tokens: int | None = None, progress: Callable[[int], None] | None = None) -> Perplexity:
    """Encode a text as plain text (special-token strings stay text; BOS first where the tokenizer
    adds it), keep the first max_tokens tokens and score them with rolling windows."""
    if tokenizer is None:
        raise LucidError("this model has no tokenizer, so it cannot read a text")
    if max_tokens is not None and max_tokens < 2:
        raise LucidError(f"--max-tokens must be at least 2 (got {max_tokens})")
    window, stride = check_window(model, window, stride)
    ids = tokenizer.encode(text, add_bos=tokenizer.add_bos_token)
    ids = ids[:max_tokens] if max_tokens is not None else ids
    rolling = rolling_loglikelihood(model, ids, window, stride, progress)
    n_bytes = sum(len(tokenizer.token_bytes(t)) for t in ids[1:] if not tokenizer.is_special(t))
    if n_bytes == 0:
        raise LucidError("the scored tokens hold no text bytes")
    return Perplexity(rolling, len(ids), n_bytes, window, stride)
