"""What a model learns from its data: an objective turns windows of a corpus into batches and a
batch into a loss, so the trainer's loop is the same for every kind of model.

- NextToken: predict each next token from the ones before it (GPT; Radford et al. 2018).
- MaskedLM: predict hidden tokens from both sides (BERT; Devlin et al. 2019). 15% of the real
  tokens are chosen; 80% of those become [MASK], 10% a random token and 10% stay as they are, so
  the model cannot learn that only [MASK] needs predicting. The loss is on the chosen tokens only.
- SequenceToSequence (translation.py): write a target given a source, with an encoder-decoder.
- InstructionTuning (instruction_tuning.py): answer instructions and chats, the loss on the answers only.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import LucidError
from ..generation import generate, make_sampler
from ..tokenizer import UnitTokenizer
from .data import Split, Windows
from .instruction_tuning import InstructionTuning
from .loss import IGNORE, masked_loss
from .translation import SequenceToSequence


class NextToken:
    """GPT's objective: inputs are a window, targets the same tokens one step later."""

    name = "next-token"
    # What the trainer asks of every objective about its data: documents are whole files (or split
    # at --doc-separator), tokenized as they are, and cut into windows of a token stream.
    separator: str | None = None
    encode_document = None  # or a function: document text -> ids
    records = False  # True: each document is one example (no windows)
    own_data = False  # True: the objective reads its files itself (datasets()), no token shards

    def __init__(self, tokenizer, settings) -> None:
        self.tokenizer, self.settings = tokenizer, settings

    def check(self, config) -> None:
        if config.is_encoder_decoder:
            raise LucidError("this model is an encoder-decoder: its decoder reads a source, so train it on "
                             "pairs with --objective seq2seq")
        if not config.causal:
            raise LucidError("this model sees both sides (causal = false), so next-token prediction would let it "
                             "read the answer: train it with --objective mlm")
        if config.head != "lm":
            raise LucidError(f"next-token training needs a model with an LM head (this one's head is {config.head!r})")

    def window(self, context_length: int) -> int:
        """The Windows size: T inputs, from rows of T + 1 tokens."""
        return context_length

    def dataset(self, windows: Windows):
        return windows

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_loss(model(batch["inputs"]), batch["targets"], batch["mask"])

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["mask"].sum())

    def baseline(self, train: Split, val: Split) -> float | None:
        return None

    def sample(self, model, data) -> str:
        """A short text from the model as it is now, through the generation engine (a context that
        fills up keeps its newer half and goes on, as nanoGPT's cropping does)."""
        s, tok = self.settings, self.tokenizer
        start = tok.encode("\n") if isinstance(tok, UnitTokenizer) and tok.knows("\n") else \
            [tok.eos_token_id if tok.eos_token_id is not None else 0]
        return generate(model, tok, start, max_tokens=s.sample_tokens, seed=s.seed, overflow="shift",
                        sampler=make_sampler(temp=s.sample_temperature))

    def try_it(self, run: str) -> str:
        return f"chat with it: lucidlm chat --model {run}"


class MaskedLM:
    """BERT's objective over windows wrapped as [CLS] tokens [SEP] (when the tokenizer has them)."""

    name = "mlm"
    separator, encode_document, records, own_data = (NextToken.separator, NextToken.encode_document,
                                                     NextToken.records, NextToken.own_data)

    def __init__(self, tokenizer, settings) -> None:
        self.tokenizer, self.settings = tokenizer, settings
        self.mask_id = getattr(tokenizer, "mask_token_id", None)
        if self.mask_id is None:
            raise LucidError("--objective mlm needs a tokenizer with a mask token, such as a WordPiece "
                             "(leave --tokenizer out to train one, or: lucidlm tokenizer train --kind wordpiece)")
        self.cls_id = getattr(tokenizer, "cls_token_id", None)
        self.sep_id = getattr(tokenizer, "sep_token_id", None)
        self.pad_id = tokenizer.pad_token_id or 0
        special = [i for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)]
        self.special = torch.tensor(sorted(set(special) | {self.mask_id, self.pad_id}), dtype=torch.long)
        keep = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
        keep[self.special] = False
        self.ordinary = keep.nonzero().squeeze(1)  # what a random replacement may be
        prefix = getattr(tokenizer, "prefix", None)  # WordPiece: a "##" piece continues the word before it
        self.continues = torch.tensor([p.startswith(prefix) for p in tokenizer.vocab]) if prefix else None
        if settings.whole_word_mask and self.continues is None:
            raise LucidError("--whole-word-mask needs a WordPiece tokenizer (its ## pieces mark where words go on)")
        self.wrap = (self.cls_id is not None) + (self.sep_id is not None)

    def check(self, config) -> None:
        if config.causal:
            raise LucidError("masked-LM training needs a model that sees both sides (causal = false), "
                             "e.g. --preset tiny-bert")
        if config.head not in ("mlm", "lm"):
            raise LucidError(f"masked-LM training needs a model with a masked-LM head (this one's head is {config.head!r})")

    def window(self, context_length: int) -> int:
        """Rows of Windows(window) hold window + 1 tokens; with [CLS] and [SEP] they fill the context."""
        window = context_length - self.wrap - 1
        if window < 1:
            raise LucidError(f"a context of {context_length} leaves no room for text beside [CLS] and [SEP]")
        return window

    def dataset(self, windows: Windows) -> "MaskedWindows":
        return MaskedWindows(windows, self)

    def loss(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        chosen = batch["labels"] != IGNORE  # (B, T)
        # Only the chosen positions go through the head: 15% of the vocabulary projection's work.
        logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], logits_for=chosen)  # (N, V)
        if not bool(chosen.any()):  # this process drew no target (another did): it adds nothing
            return logits.float().sum() * 0.0
        return F.cross_entropy(logits.float(), batch["labels"][chosen]) * batch["share"]

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def baseline(self, train: Split, val: Split) -> float | None:
        """The masked-token loss of a model that knows only how often each token occurs: the
        cross-entropy of the held-out tokens under the training text's token frequencies (add-one)."""
        counts = np.bincount(np.asarray(train.tokens, dtype=np.int64), minlength=self.tokenizer.vocab_size)
        counts = counts.astype(np.float64) + 1.0
        counts[self.special.numpy()] = 0.0
        log_p = np.log(counts / counts.sum(), where=counts > 0, out=np.full_like(counts, -np.inf))
        held = np.asarray(val.tokens if len(val) else train.tokens, dtype=np.int64)
        held = held[~np.isin(held, self.special.numpy())]
        return float(-log_p[held].mean()) if len(held) else None

    def corrupt(self, ids: torch.Tensor, real: torch.Tensor, draws: torch.Tensor,
                replacements: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> (inputs with the chosen tokens replaced, labels: the chosen tokens, else IGNORE).
        draws (2, B, T) uniform in [0, 1): whether a token is chosen, then what it becomes."""
        s = self.settings
        eligible = real & ~torch.isin(ids, self.special)
        chance = draws[0]
        if self.settings.whole_word_mask:
            # A word's pieces share the draw of its first piece, so words are chosen whole.
            starts = ~self.continues[ids] | ~eligible  # (B, T)
            positions = torch.arange(ids.shape[1]).expand_as(ids)
            first = positions.where(starts, 0).cummax(dim=1).values  # the latest word start at or before
            chance = chance.gather(1, first)
        chosen = eligible & (chance < s.mask_probability)
        if not bool(chosen.any()) and bool(eligible.any()):
            chosen.view(-1)[int(eligible.view(-1).nonzero()[0])] = True  # a batch with no target has no loss
        labels = ids.masked_fill(~chosen, IGNORE)
        inputs = ids.clone()
        to_mask = chosen & (draws[1] < 0.8)
        to_random = chosen & (draws[1] >= 0.8) & (draws[1] < 0.9)
        inputs[to_mask] = self.mask_id
        inputs[to_random] = self.ordinary[replacements[to_random]]
        return inputs, labels

    def sample(self, model, data) -> str:
        """A held-out window with a few tokens masked, each shown as ⟨guess⟩, or ⟨guess≠truth⟩."""
        generator = torch.Generator().manual_seed(self.settings.seed)
        batch = data.batch([0], generator, slice(0, 1))
        ids = batch["input_ids"][:, :48].to(model.device)
        labels = batch["labels"][:, :48].to(model.device)
        chosen = labels != IGNORE
        if not bool(chosen.any()):
            return ""
        with torch.no_grad():
            guesses = model(ids, attention_mask=batch["attention_mask"][:, :48].to(model.device),
                            logits_for=chosen).argmax(-1).tolist()
        def glued(token: int) -> bool:
            return self.continues is not None and bool(self.continues[token])

        out, n = [], 0
        for position, token in enumerate(ids[0].tolist()):
            if token in (self.cls_id, self.sep_id, self.pad_id) and not chosen[0, position]:
                continue
            shown = self.tokenizer.decode([token])
            if chosen[0, position]:
                truth, guess = int(labels[0, position]), guesses[n]
                n += 1
                shown = self.tokenizer.decode([guess])
                shown = f"⟨{shown}⟩" if guess == truth else f"⟨{shown}≠{self.tokenizer.decode([truth])}⟩"
                token = truth
            out.append(shown if glued(token) or not out else " " + shown)
        return "".join(out)

    def try_it(self, run: str) -> str:
        return f'fill in a blank: lucidlm fill-mask --model {run} "... [MASK] ..."'


class MaskedWindows:
    """Windows of a split as masked-LM batches: [CLS] window [SEP], padded on the right, masked at
    random from the drawing generator (a resumed run draws the same masks again)."""

    def __init__(self, windows: Windows, objective: MaskedLM) -> None:
        self.windows, self.objective = windows, objective

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, indices: Sequence[int], generator: torch.Generator, keep: slice) -> dict[str, torch.Tensor]:
        """This process's rows (`keep`) of the global batch `indices`. The whole global batch is
        masked, so that `share` can weigh this process's mean loss by its part of the batch's
        chosen tokens: the processes' average is then the mean over all of them, as in one process."""
        o = self.objective
        rows, lengths = self.windows.rows(indices)  # (N, W + 1), (N,)
        B, W = rows.shape
        T = W + o.wrap
        ids = torch.full((B, T), o.pad_id, dtype=torch.long)
        start = 1 if o.cls_id is not None else 0
        ids[:, start:start + W] = torch.from_numpy(rows)
        lengths = torch.from_numpy(lengths)
        if o.cls_id is not None:
            ids[:, 0] = o.cls_id
        real = torch.arange(T)[None, :] < (lengths + o.wrap)[:, None]  # (B, T)
        ids = ids.masked_fill(~real, o.pad_id)
        if o.sep_id is not None:
            ids[torch.arange(B), lengths + start] = o.sep_id
        # Draws for the whole global batch, so every process's generator stays in step.
        draws = torch.rand(2, B, T, generator=generator)
        replacements = torch.randint(len(o.ordinary), (B, T), generator=generator)
        inputs, labels = o.corrupt(ids, real, draws, replacements)
        chosen = labels != IGNORE
        processes = B / len(range(B)[keep])
        share = torch.tensor(processes * int(chosen[keep].sum()) / max(int(chosen.sum()), 1))
        return {"input_ids": inputs[keep], "attention_mask": real[keep].long(), "labels": labels[keep], "share": share}


OBJECTIVES = {"next-token": NextToken, "mlm": MaskedLM, "seq2seq": SequenceToSequence, "sft": InstructionTuning}


def make_objective(name: str, tokenizer, settings):
    return OBJECTIVES[name](tokenizer, settings)


def describe_baseline(loss: float | None) -> str:
    if loss is None:
        return ""
    return f"unigram baseline (token frequencies only): loss {loss:.4f}, perplexity {math.exp(min(loss, 50)):.1f}"
