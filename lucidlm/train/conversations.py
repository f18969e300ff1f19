"""Fine-tuning examples: JSONL records rendered to token ids, each with a loss mask that covers the
answer's tokens only (instruction tuning learns to answer, not to write questions).

A record is one line, one of:
- {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]}: a
  chat, rendered with the model's chat template; every assistant turn (and the template's end of
  turn after it) is learned;
- {"instruction": ..., "input": ... (optional), "output": ...}: rendered as one user turn and one
  assistant turn of the chat template, or with the Alpaca prompt (Taori et al. 2023, as in
  "Build a Large Language Model (from Scratch)" chapter 7), the output followed by the end token;
- {"text": ...}: plain text, every token learned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import LucidError

PROMPT_FORMATS = ("auto", "chat", "alpaca")
ALPACA_HEADER = ("Below is an instruction that describes a task. Write a response that appropriately "
                 "completes the request.\n\n")
ALPACA_INPUT_HEADER = ("Below is an instruction that describes a task, paired with an input that provides "
                       "further context. Write a response that appropriately completes the request.\n\n")


@dataclass
class Example:
    """One rendered record: token ids and, per token, whether the loss learns it."""

    ids: list[int]
    learn: list[bool]
    asked: str = ""  # the question, for showing the model's answer beside it
    answer_start: int = 0  # where the first answer starts (also under --train-on-prompt); 0: plain text

    @property
    def prompt_ids(self) -> list[int]:
        """The tokens before the first answer: what a model answers when asked this record ([] for text)."""
        return self.ids[:self.answer_start]


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (blank lines skipped), with the line of any that is not one."""
    if not path.is_file():
        raise LucidError(f"{path}: no such file")
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LucidError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise LucidError(f"{path}, line {number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LucidError(f"{path}, line {number}: a record must be a JSON object")
        record["_line"] = number
        records.append(record)
    if not records:
        raise LucidError(f"{path}: no records (one JSON object per line)")
    return records


def _text(record: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = record.get(key, "" if not required else None)
    if not isinstance(value, str) or (required and not value.strip()):
        raise LucidError(f"{where}: {key!r} must be a non-empty string")
    return value


def instruction_messages(record: dict[str, Any], where: str) -> list[dict[str, str]]:
    """An instruction record as a chat: the instruction (and its input) asked, the output answered."""
    instruction, extra = _text(record, "instruction", where), _text(record, "input", where, required=False)
    question = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": question}, {"role": "assistant", "content": _text(record, "output", where)}]


def alpaca_prompt(instruction: str, extra: str = "") -> str:
    """The Alpaca prompt up to where the response starts."""
    if extra.strip():
        return f"{ALPACA_INPUT_HEADER}### Instruction:\n{instruction}\n\n### Input:\n{extra}\n\n### Response:\n"
    return f"{ALPACA_HEADER}### Instruction:\n{instruction}\n\n### Response:\n"


class Renderer:
    """Records -> Examples for one tokenizer. prompt_format: "chat" (the tokenizer's template),
    "alpaca", or "auto" (chat when the tokenizer has a template, else alpaca). train_on_prompt:
    learn every token, not only the answers."""

    def __init__(self, tokenizer, prompt_format: str = "auto", train_on_prompt: bool = False) -> None:
        if prompt_format not in PROMPT_FORMATS:
            raise LucidError(f"unknown prompt format {prompt_format!r} (choose {', '.join(PROMPT_FORMATS)})")
        self.tokenizer, self.train_on_prompt = tokenizer, train_on_prompt
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.prompt_format = ("chat" if self.has_template else "alpaca") if prompt_format == "auto" else prompt_format

    def render(self, record: dict[str, Any], where: str) -> Example:
        if "messages" in record:
            example = self.chat(record["messages"], where)
        elif "instruction" in record:
            if self.prompt_format == "chat":
                example = self.chat(instruction_messages(record, where), where)
            else:
                example = self.alpaca(record, where)
        elif "text" in record:
            ids = self.tokenizer.encode_ordinary(_text(record, "text", where))
            if not ids:
                raise LucidError(f"{where}: 'text' must be a non-empty string")
            example = Example(ids, [True] * len(ids))
        else:
            raise LucidError(f"{where}: a record needs 'messages', 'instruction' (with 'output') or 'text'")
        if self.train_on_prompt:
            example.learn = [True] * len(example.ids)
        return example

    def alpaca(self, record: dict[str, Any], where: str) -> Example:
        tok = self.tokenizer
        prompt = tok.encode_ordinary(alpaca_prompt(_text(record, "instruction", where),
                                                   _text(record, "input", where, required=False)))
        answer = tok.encode_ordinary(_text(record, "output", where))
        if tok.eos_token_id is not None:
            answer.append(tok.eos_token_id)  # the model learns to stop
        return Example(prompt + answer, [False] * len(prompt) + [True] * len(answer), record["instruction"],
                       len(prompt))

    def chat(self, messages: Any, where: str) -> Example:
        """The conversation's tokens; those of each assistant turn are learned. A turn's text is found
        by rendering the conversation up to it with the generation prompt, and up to its end: the
        difference is what the model says (with the template's end-of-turn marker)."""
        tok = self.tokenizer
        if not hasattr(tok, "chat_chunks"):
            raise LucidError(f"{where}: chat records need a tokenizer with a chat template (a BPE)")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise LucidError(f"{where}: 'messages' must be a non-empty list of {{'role': str, 'content': str}} objects")
        roles = [m["role"] for m in messages]
        if "assistant" not in roles:
            raise LucidError(f"{where}: the conversation has no assistant turn to learn")
        first = roles.index("assistant")
        questions = [m["content"] for m in messages[:first] if m["role"] == "user"]
        asked = questions[-1] if questions else ""
        if self.train_on_prompt:  # every token learned: no need to find where the answers are
            ids = tok.apply_chat_template(messages)
            start = len(tok.apply_chat_template(messages[:first], add_generation_prompt=True)) if first else 0
            return Example(ids, [True] * len(ids), asked, min(start, len(ids)))

        def rendered(upto: Sequence[dict], prompt: bool) -> str:
            return "".join(text for text, _ in tok.chat_chunks(list(upto), add_generation_prompt=prompt))

        whole = tok.chat_chunks(messages)
        text = "".join(t for t, _ in whole)
        spans = []
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before, after = rendered(messages[:k], True), rendered(messages[:k + 1], False)
            if not (after.startswith(before) and text.startswith(after)):
                raise LucidError(f"{where}: the chat template does not render this conversation turn by turn as "
                                 f"one growing text (it rewrites earlier turns, or wants a user turn first), so "
                                 f"the answers cannot be told apart; --train-on-prompt learns every token instead")
            spans.append((len(before), len(after)))
        cuts = sorted({at for span in spans for at in span})
        ids: list[int] = []
        learn: list[bool] = []
        offset = 0
        for chunk, special in whole:
            end = offset + len(chunk)
            if special:
                pieces = [(offset, end, [tok.special_tokens[chunk]])]
            else:  # cut ordinary text where an answer starts or ends, so no token straddles the edge
                edges = [offset] + [c for c in cuts if offset < c < end] + [end]
                pieces = [(a, b, tok.encode_ordinary(text[a:b])) for a, b in zip(edges, edges[1:])]
            for start, _, piece in pieces:
                inside = any(a <= start < b for a, b in spans)
                ids.extend(piece)
                learn.extend([inside] * len(piece))
            offset = end
        return Example(ids, learn, asked, learn.index(True) if True in learn else len(ids))


def render_file(path: Path, renderer: Renderer, limit: int | None = None) -> tuple[list[Example], int, int]:
    """Every record of a JSONL file as an Example cut to `limit` + 1 tokens (a window of inputs and
    their next tokens). Returns the examples, how many were cut and how many were dropped because
    nothing learnable was left."""
    examples, cut, dropped = [], 0, 0
    for record in read_records(path):
        example = renderer.render(record, f"{path}, line {record['_line']}")
        if limit is not None and len(example.ids) > limit + 1:
            example = Example(example.ids[:limit + 1], example.learn[:limit + 1], example.asked,
                              min(example.answer_start, limit))
            cut += 1
        if not any(example.learn[1:]):  # the first token is never a target
            dropped += 1
            continue
        examples.append(example)
    return examples, cut, dropped


def split_examples(examples: list[Example], val_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle, then the last val_fraction of it held out (at least one when asked for any)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    held = int(round(len(examples) * val_fraction))
    if val_fraction > 0 and len(examples) > 1:
        held = max(held, 1)
    held = min(held, len(examples) - 1)
    return [examples[i] for i in order[:len(order) - held]], [examples[i] for i in order[len(order) - held:]]
