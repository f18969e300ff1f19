"""Evaluation: scoring continuations and long texts (score), in-context learning tasks (tasks,
harness), the `lucidlm eval` commands, and lucidlm as a backend of lm-evaluation-harness
(lm_eval_backend, imported only when asked for: lm_eval is an optional dependency)."""

from .harness import ItemResult, TaskResult, encode_pair, evaluate
from .score import Perplexity, Rolling, Score, rolling_loglikelihood, score, score_batch, text_perplexity
from .tasks import Item, Prompt, Task, draw_examples, read_task, render

__all__ = ["Item", "ItemResult", "Perplexity", "Prompt", "Rolling", "Score", "Task", "TaskResult", "draw_examples",
           "encode_pair", "evaluate", "read_task", "render", "rolling_loglikelihood", "score", "score_batch",
           "text_perplexity"]
