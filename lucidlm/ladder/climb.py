"""Climb the ladder: train every rung on one corpus and measure each the same way.

Every neural rung is trained by the project's Trainer with the baby GPT's settings (the
`shakespeare-char` preset: same steps, batches, windows, optimizer, schedule and seed); the n-grams
are counted on the same training split. All are scored on the same validation windows (the
split cut into windows of the context length, every token once), in nats per token and bits per
character, and each writes a 100-character sample drawn at temperature 1 from the same seed.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..config import PRESETS
from ..errors import LucidError
from ..files import write_atomic
from ..look.figures import new_figure, save_figure
from ..model import Transformer
from ..tokenizer import UnitTokenizer, unit_tokenizer
from ..train.data import Split, Windows, open_split, prepare, read_corpus
from ..train.loss import masked_loss
from ..train.settings import TRAIN_PRESETS, TrainSettings
from ..train.trainer import Trainer
from .ngram import NGramLM
from .rung_trainer import RungTrainer
from .rungs import Rung

GPT_PRESET = "shakespeare-char"
SAMPLE_CHARS = 100
RESULTS_FILE, PLOT_FILE = "ladder.json", "ladder.png"


@dataclass
class Row:
    rung: str
    idea: str
    parameters: int  # weights, or an n-gram's stored counts
    train_seconds: float
    val_loss: float  # nats per token
    bits_per_char: float
    sample: str


def validation_windows(val: Split, window: int) -> Windows:
    return Windows(val, window, window)  # every validation token is a target exactly once


@torch.no_grad()
def neural_loss(model: torch.nn.Module, windows: Windows, batch_size: int = 64) -> tuple[float, int]:
    """Summed nats and token count over all windows, in float32."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        inputs, targets, mask = windows.get(list(range(start, min(start + batch_size, len(windows)))))
        n = int(mask.sum())
        total += float(masked_loss(model(inputs).float(), targets, mask)) * n
        count += n
    return total, count


def ngram_loss(model: NGramLM, windows: Windows, batch_size: int = 256) -> tuple[float, int]:
    total, count = 0.0, 0
    for start in range(0, len(windows), batch_size):
        inputs, targets, mask = windows.get(list(range(start, min(start + batch_size, len(windows)))))
        t, n = model.window_loss(inputs.numpy(), targets.numpy(), mask.numpy())
        total, count = total + t, count + n
    return total, count


def sample_text(next_probabilities: Callable[[list[int]], torch.Tensor], tokenizer, seed: int,
                chars: int = SAMPLE_CHARS) -> str:
    """Draw tokens at temperature 1 until the text holds `chars` characters, from a line break (or
    token 0 when the tokenizer has none)."""
    generator = torch.Generator().manual_seed(seed)
    ids = tokenizer.encode("\n") if isinstance(tokenizer, UnitTokenizer) and tokenizer.knows("\n") else [0]
    start = len(ids)
    while len(tokenizer.decode(ids[start:])) < chars and len(ids) - start < 4 * chars:
        probabilities = next_probabilities(ids)
        ids.append(int(torch.multinomial(probabilities, 1, generator=generator)))
    return tokenizer.decode(ids[start:])[:chars]


def model_sampler(model: torch.nn.Module, context: int) -> Callable[[list[int]], torch.Tensor]:
    @torch.no_grad()
    def next_probabilities(ids: list[int]) -> torch.Tensor:
        logits = model(torch.tensor([ids[-context:]]))[0, -1].float()  # (V,)
        return torch.softmax(logits, dim=-1)

    return next_probabilities


class Ladder:
    def __init__(self, data: Sequence[str], out: str, rungs: list[Rung], tokenizer: str = "char",
                 max_iters: int | None = None, seed: int = 1337, threads: int | None = None,
                 force: bool = False) -> None:
        self.paths = [Path(p) for p in data]
        for path in self.paths:
            if not path.is_file():
                raise LucidError(f"{path}: no such file")
        self.out, self.rungs, self.seed, self.force = Path(out), rungs, seed, force
        self.config = PRESETS[GPT_PRESET]
        self.window = self.config.context_length
        self.train_values = {**TRAIN_PRESETS[GPT_PRESET], "tokenizer": tokenizer, "seed": seed, "threads": threads,
                             "data": [str(p) for p in self.paths], "sample_tokens": 0, "plot": False,
                             "checkpoint_interval": 0, "keep_last": 1}
        if max_iters is not None:  # the cosine schedule ends where training does, as in the preset
            self.train_values.update(max_iters=max_iters, lr_decay_iters=max_iters)
        TrainSettings(**{**TrainSettings().to_dict(), **self.train_values}).validate()
        # Every check that can fail comes before _claim, which may delete an earlier climb (--force).
        text = "".join(read_corpus(self.paths, None))
        self.tokenizer = unit_tokenizer(tokenizer, text)
        n_tokens = len(self.tokenizer.encode(text))  # e.g. the ASCII tokenizer's error, naming the character
        if n_tokens - int(n_tokens * (1 - self.train_values["val_fraction"])) < 2:
            raise LucidError(f"the corpus ({n_tokens} tokens) leaves no validation text: use more text")
        self._claim()
        if threads is not None:
            torch.set_num_threads(threads)
        prepare(self.paths, self.tokenizer, self.out / "data", self.train_values["val_fraction"])
        self.train, self.val = open_split(self.out / "data", "train"), open_split(self.out / "data", "val")
        self.val_windows = validation_windows(self.val, self.window)
        if len(self.val_windows) == 0:
            raise LucidError("the corpus leaves no validation text: use more text")
        # bits per character: a token's nats / ln 2, spread over the characters a token stands for
        self.chars_per_token = len(self.tokenizer.decode(self.val.tokens.tolist())) / len(self.val)
        self.rows: list[Row] = []

    def _claim(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise LucidError(f"{self.out} is a file, not a folder: give --out a folder")
        if self.out.exists() and any(self.out.iterdir()):
            if not self.force:
                raise LucidError(f"{self.out} is not empty; pass --force to climb again there (its results are "
                                 f"replaced)")
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)

    def climb(self, say: Callable[[str], None] = lambda text: print(text, file=sys.stderr)) -> list[Row]:
        started = time.perf_counter()
        for n, rung in enumerate(self.rungs, 1):
            say(f"[{n}/{len(self.rungs)}] {rung.name}: {rung.idea}")
            row = self._count(rung) if rung.build is None else self._train(rung)
            self.rows.append(row)
            say(f"    validation loss {row.val_loss:.4f} nats/token, {row.bits_per_char:.3f} bits/char, "
                f"{row.parameters:,} parameters, {row.train_seconds:.1f} s")
            self._write(time.perf_counter() - started)  # a stop later loses no finished row
        self._plot()
        return self.rows

    def _row(self, rung: Rung, parameters: int, seconds: float, nats: tuple[float, int], sample: str) -> Row:
        loss = nats[0] / nats[1]
        return Row(rung.name, rung.idea, parameters, round(seconds, 2), round(loss, 4),
                   round(loss / math.log(2) / self.chars_per_token, 4), sample)

    def _count(self, rung: Rung) -> Row:
        tick = time.perf_counter()
        starts = self.train.doc_starts.tolist() + [len(self.train)]
        documents = [self.train.tokens[a:b] for a, b in zip(starts, starts[1:])]
        model = NGramLM(rung.order, self.tokenizer.vocab_size, smoothing=rung.smoothing).fit(documents)
        seconds = time.perf_counter() - tick
        sample = sample_text(lambda ids: torch.from_numpy(model.distribution(ids)), self.tokenizer, self.seed)
        return self._row(rung, model.parameters, seconds, ngram_loss(model, self.val_windows), sample)

    def _train(self, rung: Rung) -> Row:
        settings = TrainSettings(**{**TrainSettings().to_dict(), **self.train_values, "out": str(self.out / rung.name)})
        if rung.build is Transformer:  # the project's model: the Trainer builds it and writes checkpoints to chat with
            trainer = Trainer(settings, self.config, force=self.force)
        else:
            trainer = RungTrainer(settings, self.config, rung.build, force=self.force)
        try:
            result = trainer.fit()
        except BaseException:  # Ctrl-C too: the rows so far are in ladder.json already
            trainer.close(clean=False)
            raise
        trainer.close()
        model = trainer.model.float().cpu().eval()  # scored and sampled on the CPU, as the windows are
        parameters = sum(p.numel() for p in model.parameters())
        sample = sample_text(model_sampler(model, self.window), self.tokenizer, self.seed)
        return self._row(rung, parameters, result["train_seconds"], neural_loss(model, self.val_windows), sample)

    def _write(self, seconds: float) -> None:
        results = {"corpus": [str(p) for p in self.paths], "tokenizer": self.tokenizer.kind,
                   "vocab_size": self.tokenizer.vocab_size, "train_tokens": len(self.train),
                   "val_tokens": len(self.val), "window": self.window, "seed": self.seed,
                   "max_iters": self.train_values["max_iters"], "seconds": round(seconds, 1),
                   "rungs": [vars(row) for row in self.rows]}
        write_atomic(self.out / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")

    def _plot(self) -> None:
        fig = new_figure(figsize=(8, 0.45 * len(self.rows) + 1.5))
        ax = fig.add_subplot()
        names = [r.rung for r in self.rows][::-1]
        bits = [r.bits_per_char for r in self.rows][::-1]
        colours = ["tab:grey" if r.rung.endswith("-gram") else "tab:blue" for r in self.rows][::-1]
        ax.barh(names, bits, color=colours)
        for y, value in enumerate(bits):
            ax.text(value, y, f" {value:.3f}", va="center", fontsize=8)
        ax.set_xlabel("validation bits per character (lower is better)")
        ax.set_title(f"The ladder on {', '.join(p.name for p in self.paths)} (grey: counted, blue: trained)")
        ax.set_xlim(0, max(bits) * 1.15)
        save_figure(fig, self.out / PLOT_FILE)


def format_table(rows: list[Row]) -> str:
    """The table for people: one line per rung, its sample with line breaks shown as ↵."""
    header = f"{'rung':<10} {'parameters':>10} {'train s':>8} {'val loss':>8} {'bits/char':>9}  sample"
    lines = [header, "-" * len(header)]
    for r in rows:
        sample = r.sample.replace("\n", "↵")
        lines.append(f"{r.rung:<10} {r.parameters:>10,} {r.train_seconds:>8.1f} {r.val_loss:>8.4f} "
                     f"{r.bits_per_char:>9.3f}  {sample}")
    return "\n".join(lines)
