"""The sequence-to-sequence objective: learn to write a target given a source (Vaswani et al. 2017).

The data is pairs, one per line: source, a tab, target; a line is stored as `source </s> target </s>`. The encoder reads `source </s>`; the
decoder reads `<start> target` and learns `target </s>`, one step ahead (teacher forcing: it is
shown the true previous tokens, not its own guesses). The decoder starts from the end token, as
BART's does. The loss is on the target's tokens only; padding on either side is masked.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import LucidError
from ..generation.seq2seq import generate_seq2seq
from .data import Split, Windows
from .loss import masked_loss

SHOWN_PAIRS = 3  # translations shown in each sample
MEASURED_PAIRS = 200  # held-out pairs translated for the exact-match figure


class SequenceToSequence:
    name = "seq2seq"
    separator = "\n"  # each line of the data is a pair
    records = True  # the data is pairs, not windows of a token stream
    own_data = False

    def __init__(self, tokenizer, settings) -> None:
        self.tokenizer, self.settings = tokenizer, settings
        if tokenizer.eos_token_id is None:
            raise LucidError("--objective seq2seq needs a tokenizer with an end token (leave --tokenizer out "
                             "to train a BPE that has one)")
        self.eos_id, self.pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id or 0
        self.training_pairs: Pairs | None = None  # the first dataset the trainer builds

    def encode_document(self, line: str) -> list[int]:
        """'source<TAB>target' -> source ids, </s>, target ids (the corpus adds the last </s>): each
        side tokenized alone, so no token straddles the tab."""
        line = line.removesuffix("\r")  # a file with Windows line ends (translate --pairs strips them too)
        if line.count("\t") != 1 or not all(side.strip() for side in line.split("\t")):
            raise LucidError(f"a line of the data is not 'source<TAB>target': {line[:80]!r}")
        source, target = line.split("\t")
        return self.tokenizer.encode_ordinary(source) + [self.eos_id] + self.tokenizer.encode_ordinary(target)

    def check(self, config) -> None:
        if not config.is_encoder_decoder:
            raise LucidError("sequence-to-sequence training needs an encoder-decoder (encoder_layers > 0), "
                             "e.g. --preset tiny-translator")

    def window(self, context_length: int) -> int:
        return context_length

    def dataset(self, windows: Windows) -> "Pairs":
        pairs = Pairs(windows.split, self, windows.window)
        if self.training_pairs is None:
            if not len(pairs):
                raise LucidError("the training split holds no pair: give more lines of source<TAB>target")
            self.training_pairs = pairs
        return pairs

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["decoder_inputs"], attention_mask=batch["target_mask"],
                       source_ids=batch["source_ids"], source_mask=batch["source_mask"])
        return masked_loss(logits, batch["targets"], batch["target_mask"].bool()) * batch["share"]

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["source_mask"].sum() + batch["target_mask"].sum())

    def baseline(self, train: Split, val: Split) -> float | None:
        return None

    def translate(self, model, sources: Sequence[list[int]]) -> list[str]:
        """Greedy translations of source ids (end token included), as text."""
        outputs = generate_seq2seq(model, sources, max_tokens=model.config.context_length,
                                   eos_token_ids=[self.eos_id], pad_id=self.pad_id)
        return [self.tokenizer.decode([t for t in out if t != self.eos_id]) for out in outputs]

    def exact_match(self, model, data: "Pairs", limit: int = MEASURED_PAIRS) -> tuple[float, list[str]]:
        """The share of the first `limit` pairs of `data` translated exactly, and a few of them shown."""
        pairs = [data.pair(k) for k in range(min(limit, len(data)))]
        was_training = model.training
        model.eval()
        try:
            guesses = []
            for start in range(0, len(pairs), 50):
                guesses += self.translate(model, [source for source, _ in pairs[start:start + 50]])
        finally:
            model.train(was_training)
        truths = [self.tokenizer.decode(target[:-1]) for _, target in pairs]
        right = [g == t for g, t in zip(guesses, truths)]
        shown = [f"{self.tokenizer.decode(source[:-1])} → {guess}" + ("" if ok else f"  (expected: {truth})")
                 for (source, _), guess, truth, ok in zip(pairs[:SHOWN_PAIRS], guesses, truths, right)]
        return sum(right) / max(len(right), 1), shown

    def sample(self, model, data: "Pairs") -> str:
        accuracy, shown = self.exact_match(model, data)
        n = min(MEASURED_PAIRS, len(data))
        which = "training" if data is self.training_pairs else "held-out"  # --val-fraction 0: no held-out pairs
        return "\n".join(shown + [f"exact match on {n} {which} pairs: {accuracy:.1%}"])

    def try_it(self, run: str) -> str:
        return f'translate with it: lucidlm translate --model {run} "three hundred and twelve"'


class Pairs:
    """The pairs of one split: pair k is (source ids + </s>, target ids + </s>). (The validation
    split starts at a pair: prepare() never cuts a structured document.)"""

    def __init__(self, split: Split, objective: SequenceToSequence, context_length: int) -> None:
        self.split, self.objective = split, objective
        tokens = np.asarray(split.tokens)
        starts = np.append(split.doc_starts, len(tokens)).astype(np.int64)
        spans = []
        for line, (start, end) in enumerate(zip(starts[:-1], starts[1:])):
            if start == end:
                continue  # an empty split (--val-fraction 0) still lists one document start
            ends = np.flatnonzero(tokens[start:end] == objective.eos_id)  # after the source, after the target
            if len(ends) != 2 or ends[1] != end - start - 1:
                raise LucidError(f"pair {line + 1} of the data does not tokenize as source </s> target </s>")
            longest = max(ends[0] + 1, end - start - ends[0] - 1)
            if longest > context_length:
                raise LucidError(f"pair {line + 1} has {longest} tokens on one side; the model's context is "
                                 f"{context_length}")
            spans.append((int(start), int(start + ends[0]), int(end)))
        self.spans = spans

    def __len__(self) -> int:
        return len(self.spans)

    def pair(self, k: int) -> tuple[list[int], list[int]]:
        start, tab, end = self.spans[k]
        tokens = self.split.tokens
        return [int(t) for t in tokens[start:tab]] + [self.objective.eos_id], [int(t) for t in tokens[tab + 1:end]]

    def batch(self, indices: Sequence[int], generator: torch.Generator, keep: slice) -> dict[str, torch.Tensor]:
        """This process's rows of the global batch `indices`. `share` scales their mean loss so
        that the processes' average is the mean over every target token of the global batch (pairs
        differ in length: a plain average of the processes' means would weigh tokens unequally)."""
        pairs = [self.pair(int(k)) for k in indices[keep]]
        pad, start = self.objective.pad_id, self.objective.eos_id
        sources = [source for source, _ in pairs]
        targets = [target for _, target in pairs]

        def padded(rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
            width = max(len(r) for r in rows)
            ids = torch.tensor([r + [value] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            return ids, mask

        source_ids, source_mask = padded(sources, pad)
        decoder_inputs, target_mask = padded([[start] + t[:-1] for t in targets], pad)
        target_ids, _ = padded(targets, pad)
        everyone = sum(self.spans[int(k)][2] - self.spans[int(k)][1] - 1 for k in indices)  # target tokens
        processes = len(indices) / len(pairs)
        share = torch.tensor(processes * int(target_mask.sum()) / everyone)
        return {"source_ids": source_ids, "source_mask": source_mask, "decoder_inputs": decoder_inputs,
                "targets": target_ids, "target_mask": target_mask, "share": share}
