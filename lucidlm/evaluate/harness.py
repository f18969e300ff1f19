"""The in-context learning harness: a task's prompts scored by a model. Multiple choice: every
choice's log-likelihood as a continuation of the prompt; `acc` takes the most likely choice and
`acc_norm` the most likely per character of the choice (lm-evaluation-harness's definitions).
Generation: greedy text up to a stop string, `exact_match` against the target (both stripped).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import LucidError
from ..generation import GenerationSettings, batch_generate
from ..generation.text import check_generates
from .score import Score, score_batch
from .tasks import GENERATION, Prompt, Task, render

GENERATE_TOKENS = 32  # a generation answer is short: a word or a number, then the stop string


def encode_pair(tokenizer, prompt: Prompt, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's causal models make them: trailing spaces of the
    context move to the continuation, the whole text is encoded and cut after the context's
    tokens, so the tokens are the ones the model would read in the joined text. A chat prompt is
    the template's ids (its special tokens special, the messages plain), then the answer's."""
    if prompt.messages is not None:
        return (tokenizer.apply_chat_template(list(prompt.messages), add_generation_prompt=True),
                tokenizer.encode(continuation))
    context = prompt.text
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode(context + continuation, add_bos=tokenizer.add_bos_token)
    context_ids = tokenizer.encode(context, add_bos=tokenizer.add_bos_token)
    return context_ids, whole[len(context_ids):]


@dataclass
class ItemResult:
    """One query: its prompt; the choices' scores (multiple choice) or the generated text."""

    prompt: Prompt
    answer: int
    choices: tuple[str, ...]
    scores: list[Score] = field(default_factory=list)
    generated: str | None = None

    @property
    def per_char(self) -> list[float]:
        """acc_norm's score: the log-likelihood divided by the choice's length in characters."""
        return [s.logprob / max(len(c), 1) for s, c in zip(self.scores, self.choices)]

    @property
    def chosen(self) -> int:
        return max(range(len(self.scores)), key=lambda i: self.scores[i].logprob)

    @property
    def chosen_norm(self) -> int:
        per_char = self.per_char
        return max(range(len(per_char)), key=per_char.__getitem__)

    @property
    def exact_match(self) -> bool:
        return self.generated is not None and self.generated.strip() == self.choices[self.answer].strip()


@dataclass
class TaskResult:
    task: Task
    shots: int
    items: list[ItemResult]

    @property
    def metrics(self) -> dict[str, float]:
        n = len(self.items)
        if self.task.kind == GENERATION:
            return {"exact_match": sum(r.exact_match for r in self.items) / n}
        return {"acc": sum(r.chosen == r.answer for r in self.items) / n,
                "acc_norm": sum(r.chosen_norm == r.answer for r in self.items) / n}


def evaluate(model, tokenizer, task: Task, shots: int, seed: int = 0, limit: int | None = None,
             chat: bool = False, batch_size: int = 16, max_tokens: int = GENERATE_TOKENS) -> TaskResult:
    """Score the first `limit` queries of a task (all by default) with `shots` examples each,
    drawn from the whole task."""
    check_generates(model)
    if tokenizer is None:
        raise LucidError("this model has no tokenizer, so it cannot read a task's text")
    if limit is not None and limit < 1:
        raise LucidError(f"--limit must be at least 1 (got {limit})")
    queries = range(min(limit, len(task.items)) if limit is not None else len(task.items))
    results = []
    for q in queries:
        prompt = render(task, q, shots, seed, tokenizer, chat)
        results.append(ItemResult(prompt, task.items[q].answer, task.items[q].choices))
    if task.kind == GENERATION:
        settings = [GenerationSettings(max_tokens=max_tokens, stop=task.items[r.prompt.query].stop) for r in results]
        prompts = [encode_pair(tokenizer, r.prompt, "")[0] for r in results]
        for r, text in zip(results, batch_generate(model, tokenizer, prompts, settings=settings)):
            r.generated = text
        return TaskResult(task, shots, results)
    pairs = [encode_pair(tokenizer, r.prompt, r.prompt.continuation(c)) for r in results for c in r.choices]
    scores = iter(score_batch(model, pairs, batch_size))
    for r in results:
        r.scores = [next(scores) for _ in r.choices]
    return TaskResult(task, shots, results)
