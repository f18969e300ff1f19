"""The supervised fine-tuning objective (instruction tuning; Ouyang et al. 2022, Wei et al. 2021):
next-token prediction on rendered records (conversations.py), with the loss on the answer's tokens
only. Each record is one example, padded on the right in its batch, never cut into windows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..errors import LucidError
from ..generation import generate, make_sampler
from ..model.shared_prefix import prefix_to_share
from .conversations import Example, Renderer, render_file, split_examples
from .data import Split, Windows


class InstructionTuning:
    name = "sft"
    separator = None
    encode_document = None
    records = True
    own_data = True  # reads its JSONL records itself: no token shards, no windows

    def __init__(self, tokenizer, settings) -> None:
        self.tokenizer, self.settings = tokenizer, settings
        self.renderer = Renderer(tokenizer, settings.prompt_format, settings.train_on_prompt)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def check(self, config) -> None:
        if config.is_encoder_decoder or not config.causal or config.head != "lm":
            raise LucidError("instruction tuning needs a decoder with an LM head (a GPT or Llama-style model)")

    def window(self, context_length: int) -> int:
        return context_length

    def datasets(self, paths: Sequence[Path], window: int) -> tuple["Examples", "Examples | None", str]:
        """Training and held-out examples from the JSONL files, and a line that says what was read."""
        examples, cut, dropped = [], 0, 0
        for path in paths:
            found, c, d = render_file(path, self.renderer, limit=window)
            examples += found
            cut, dropped = cut + c, dropped + d
        if not examples:
            raise LucidError("no record has a token to learn (an answer) within the window")
        train, val = split_examples(examples, self.settings.val_fraction, self.settings.seed)
        learned = sum(sum(e.learn[1:]) for e in examples)
        total = sum(len(e.ids) for e in examples)
        said = (f"{len(examples)} examples ({len(train)} train, {len(val)} held out), {total:,} tokens, "
                f"{learned:,} of them learned; prompts rendered as {self.renderer.prompt_format}")
        if cut or dropped:
            said += f"; {cut} cut to the window of {window}, {dropped} dropped (nothing left to learn)"
        return Examples(train, self), (Examples(val, self) if val else None), said

    def dataset(self, windows: Windows):
        raise LucidError("instruction tuning reads its records itself")  # own_data: the trainer never asks

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        learn = batch["learn"]  # (B, T) bool
        # Only learned positions go through the LM head: prompts are often most of the tokens. No
        # attention mask: the padding is on the right, where the causal mask already keeps every
        # real token from seeing it, so the fused causal kernel serves (the same logits, exactly).
        # The rows' common beginning (a chat template's system prompt) is computed once.
        inputs = batch["inputs"]
        logits = model(inputs, logits_for=learn, shared_prefix=prefix_to_share(model, inputs))  # (N, V)
        return F.cross_entropy(logits.float(), batch["targets"][learn]) * batch["share"]

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def baseline(self, train: Split, val: Split) -> float | None:
        return None

    def sample(self, model, data: "Examples") -> str:
        """The model's greedy answer to the first question (held out when there are any); nothing
        when the records are plain text."""
        example = next((e for e in data.examples if e.prompt_ids), None)
        if example is None:
            return ""
        prompt = example.prompt_ids
        answer = generate(model, self.tokenizer, prompt, max_tokens=self.settings.sample_tokens,
                          sampler=make_sampler(temp=0.0))
        return f"{example.asked or self.tokenizer.decode(prompt)[-80:]} → {answer.strip()}"

    def try_it(self, run: str) -> str:
        return f"chat with it: lucidlm chat --model {run}"


class Examples:
    """Rendered examples as training batches: inputs are an example's tokens, targets the same
    shifted by one, `learn` marks the targets the loss counts."""

    def __init__(self, examples: list[Example], objective: InstructionTuning) -> None:
        self.examples, self.objective = examples, objective

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, indices: Sequence[int], generator: torch.Generator, keep: slice) -> dict[str, torch.Tensor]:
        """This process's rows of the global batch `indices`; `share` weighs its mean loss by its part
        of the global batch's learned tokens (as seq2seq's pairs do), so processes average right."""
        rows = [self.examples[int(k)] for k in indices[keep]]
        width = max(len(e.ids) for e in rows) - 1
        B = len(rows)
        ids = torch.full((B, width + 1), self.objective.pad_id, dtype=torch.long)
        learn = torch.zeros(B, width + 1, dtype=torch.bool)
        real = torch.zeros(B, width, dtype=torch.long)
        for r, example in enumerate(rows):
            n = len(example.ids)
            ids[r, :n] = torch.tensor(example.ids)
            learn[r, :n] = torch.tensor(example.learn)
            real[r, :n - 1] = 1
        everyone = sum(sum(self.examples[int(k)].learn[1:]) for k in indices)
        mine = learn[:, 1:]
        processes = len(indices) / B
        share = torch.tensor(processes * int(mine.sum()) / everyone)
        return {"inputs": ids[:, :-1], "targets": ids[:, 1:], "learn": mine, "attention_mask": real, "share": share}
