"""In-context learning tasks: JSONL files of multiple-choice items ({"question", "choices",
"answer"}) or generation items ({"prompt", "target", "stop"?}), an optional description beside them
(capitals.jsonl -> capitals.description.txt), and the prompt a model sees: the description, k
examples drawn with a seed (never the query itself) and the query, as plain text in
lm-evaluation-harness's default layout ("Question: ...\\nAnswer: ...") or as a multi-turn chat.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, LucidError

QUESTION = "Question: {}\nAnswer:"
EXAMPLE_SEPARATOR = "\n\n"  # lm-eval's fewshot_delimiter
TARGET_SEPARATOR = " "  # lm-eval's target_delimiter: the space belongs to the continuation
DEFAULT_STOP = ("\n",)
MULTIPLE_CHOICE, GENERATION = "multiple_choice", "generation"
FIELDS = {MULTIPLE_CHOICE: ({"question", "choices", "answer"}, set()),
          GENERATION: ({"prompt", "target"}, {"stop"})}  # kind -> (required, optional)


@dataclass(frozen=True)
class Item:
    """One line of a task file. Multiple choice: question, choices, answer (an index). Generation:
    question is the prompt, choices is (target,), answer 0, stop the strings that end the answer."""

    question: str
    choices: tuple[str, ...]
    answer: int
    stop: tuple[str, ...] = DEFAULT_STOP

    @property
    def target(self) -> str:
        return self.choices[self.answer]


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # MULTIPLE_CHOICE or GENERATION
    items: tuple[Item, ...]
    description: str = ""


def _text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where}: {field!r} must be a string")
    return value


def _item(record: Any, where: str) -> tuple[str, Item]:
    if not isinstance(record, dict):
        raise FormatError(f"{where}: expected a JSON object")
    kind = MULTIPLE_CHOICE if "question" in record else GENERATION if "prompt" in record else None
    if kind is None:
        raise FormatError(f"{where}: a task item has 'question', 'choices', 'answer' (multiple choice) "
                          f"or 'prompt', 'target' (generation)")
    required, optional = FIELDS[kind]
    missing, unknown = sorted(required - set(record)), sorted(set(record) - required - optional)
    if missing or unknown:
        raise FormatError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown else [])))
    if kind == GENERATION:
        stop = record.get("stop", list(DEFAULT_STOP))
        stop = [stop] if isinstance(stop, str) else stop
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise FormatError(f"{where}: 'stop' must be a string or a list of non-empty strings")
        return kind, Item(_text(record["prompt"], where, "prompt"), (_text(record["target"], where, "target"),), 0,
                          tuple(stop))
    choices = record["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
        raise FormatError(f"{where}: 'choices' must be a list of at least two strings")
    answer = record["answer"]
    if not isinstance(answer, int) or isinstance(answer, bool):
        raise FormatError(f"{where}: 'answer' must be the index of the right choice (an integer)")
    if not 0 <= answer < len(choices):
        raise FormatError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
    return kind, Item(_text(record["question"], where, "question"),
                      tuple(_text(c, where, "a choice") for c in choices), answer)


def description_path(path: Path) -> Path:
    return path.with_name(path.stem + ".description.txt")


def read_task(path: str | Path) -> Task:
    """Read a task file; every mistake is one FormatError naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    kinds, items = set(), []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise FormatError(f"{where}: not valid JSON ({exc})") from None
        kind, item = _item(record, where)
        kinds.add(kind)
        if len(kinds) > 1:
            raise FormatError(f"{where}: a task file holds one kind of item, multiple choice or generation, not both")
        items.append(item)
    if not items:
        raise FormatError(f"{path}: no task items")
    sidecar = description_path(path)
    description = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else ""
    return Task(path.stem, kinds.pop(), tuple(items), description)


def draw_examples(task: Task, query: int, shots: int, seed: int) -> list[int]:
    """shots example indices for one query, never the query: the same seed gives the same ones."""
    if not 0 <= shots <= len(task.items) - 1:
        raise LucidError(f"{task.name}: {shots} shots need {shots + 1} items, but the task has {len(task.items)}")
    others = [i for i in range(len(task.items)) if i != query]
    # One generator per (seed, query): an item's examples do not depend on --limit or on the order.
    return random.Random(f"{seed}:{query}").sample(others, shots)


@dataclass(frozen=True)
class Prompt:
    """What the model reads for one query: text (shown by --show), and chat messages when it is a
    chat (then the text is the rendered template and continuations carry no leading space)."""

    query: int
    examples: tuple[int, ...]
    text: str
    messages: tuple[dict[str, str], ...] | None = None

    def continuation(self, choice: str) -> str:
        return choice if self.messages is not None else TARGET_SEPARATOR + choice


def render(task: Task, query: int, shots: int, seed: int, tokenizer=None, chat: bool = False) -> Prompt:
    """The description, the examples with their answers, then the query waiting for its answer."""
    examples = draw_examples(task, query, shots, seed)
    if chat:
        if tokenizer is None:
            raise LucidError("a chat prompt needs the model's tokenizer and its chat template")
        messages = [{"role": "system", "content": task.description}] if task.description else []
        for i in examples:
            messages += [{"role": "user", "content": task.items[i].question},
                         {"role": "assistant", "content": task.items[i].target}]
        messages.append({"role": "user", "content": task.items[query].question})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return Prompt(query, tuple(examples), text, tuple(messages))
    parts = [task.description] if task.description else []
    parts += [QUESTION.format(task.items[i].question) + TARGET_SEPARATOR + task.items[i].target for i in examples]
    parts.append(QUESTION.format(task.items[query].question))
    return Prompt(query, tuple(examples), EXAMPLE_SEPARATOR.join(parts))
