"""The trainer: AdamW, warmup + cosine schedule, clipping, gradient accumulation, evaluation,
samples, metrics, plots and checkpoints, on one process or many (torchrun).

A run can stop anywhere (Ctrl-C saves a checkpoint first) and `--resume` continues it exactly: the
model, the optimizer, the step and the data position are restored, and dropout is seeded from the
step, so the loss trajectory equals that of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import LucidError, reading
from ..locate import TOKENIZER_FILE
from ..model import Transformer
from ..model.lora import LoRASettings, add_lora, lora_layers, merge_lora
from ..options import resolve_device
from ..tokenizer import UNIT_TOKENIZERS, Tokenizer, WordPieceTokenizer, unit_tokenizer
from ..weights import load
from . import distributed
from .data import Batches, Windows, open_split, prepare, read_corpus
from .objectives import OBJECTIVES, describe_baseline, make_objective
from .optimizer import make_optimizer
from .plot import plot_losses
from .run_folder import RunFolder
from .schedule import learning_rate
from .settings import TrainSettings, check_data_paths


@contextlib.contextmanager
def deterministic_algorithms(on: bool):
    """torch's deterministic kernels for the block (--deterministic); the switch is process-wide,
    so the previous setting comes back after."""
    before = torch.are_deterministic_algorithms_enabled()
    if on:
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def autocast_context(device: torch.device, mode: str):
    """A context-manager factory: bfloat16 autocast where the hardware computes in bfloat16
    natively (CUDA GPUs that support it; CPUs with AVX512-BF16 or AMX, where matmuls run 2-2.5x
    faster, measured), or when mode is "bf16"; mode "gpu": only on such a GPU; otherwise no autocast."""
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported() and mode != "gpu"
    if mode == "bf16" or (mode in ("auto", "gpu") and supported):
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class TrainingStopped(LucidError):
    """Training cannot go on (a NaN loss); the message says what was kept."""


class Trainer:
    def __init__(self, settings: TrainSettings, config: Config | None, resume: bool = False,
                 force: bool = False, explicit_vocab: bool = False) -> None:
        """config: the model to train from scratch (None with --init-from or --resume).
        explicit_vocab: the user set config.vocab_size; otherwise the tokenizer decides it."""
        self.explicit_vocab = explicit_vocab
        self.settings = s = settings
        if s.out is None:
            raise LucidError("say where the run goes: --out FOLDER")
        if s.threads is not None:
            torch.set_num_threads(s.threads)
        if s.deterministic:  # cuBLAS's condition for determinism, set before any CUDA work creates its handle
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        device = resolve_device(s.device)
        self.world = distributed.join(device)
        self.device = distributed.local_device(device, self.world)
        self.run = RunFolder(s.out)
        self.main = self.world.is_main
        # Where the corpus splits into documents: the user's --doc-separator, else the objective's
        # own (seq2seq: every line is a pair), else whole files.
        self.separator = s.doc_separator if s.doc_separator is not None else \
            OBJECTIVES[s.objective].separator

        state = None
        if resume:
            checkpoint = self.run.latest()
            state = RunFolder.load_trainer_state(checkpoint)
            if self.main:
                self.run.clean_partial()
        elif self.main:
            self.run.claim(force)
        distributed.barrier(self.world)

        self.tokenizer = self._tokenizer(resume)
        torch.manual_seed(s.seed)  # the same initial weights on every process and every run
        self.model = self._model(config, resume)
        self.config = self.model.config
        self.objective = make_objective(s.objective, self.tokenizer, s)
        self.objective.check(self.config)
        self.window = s.window or self.objective.window(self.config.context_length)
        if self.window > self.config.context_length and self.config.position == "learned":
            raise LucidError(f"window {self.window} is longer than the model's learned context "
                             f"{self.config.context_length}")
        self._data()
        self.optimizer = make_optimizer(self.model, s.learning_rate, s.weight_decay, (s.beta1, s.beta2), self.device)
        self.step, self.best_val, self.tokens_seen, self.elapsed = 0, math.inf, 0, 0.0
        if state is not None:
            with reading(checkpoint / "trainer.pt", "trainer state"):
                self._restore(state)
        elif self.main:
            self.run.write({"settings": s.to_dict(), "config": self.config.to_dict(), "latest": None, "best": None,
                            "checkpoints": [], "world_size": self.world.size})
        self.train_model = self.model
        if self.world.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.autocast = self._autocast()

    # --- setup -----------------------------------------------------------------------------------

    def _tokenizer(self, resume: bool):
        s, root = self.settings, self.run.path
        if resume:
            return Tokenizer.from_file(root)
        if self.main:
            paths = check_data_paths(s)
            if s.init_from and not s.tokenizer:
                tokenizer = None  # the pretrained model brings its own (see _model)
            elif s.tokenizer in UNIT_TOKENIZERS:
                tokenizer = unit_tokenizer(s.tokenizer, "".join(read_corpus(paths, self.separator)))
            elif s.tokenizer:
                tokenizer = Tokenizer.from_file(s.tokenizer)
            elif s.objective == "mlm":
                self._say(f"training a {s.bpe_vocab_size}-piece WordPiece on the corpus (pass --tokenizer to reuse one)")
                tokenizer = WordPieceTokenizer.train(read_corpus(paths, self.separator), s.bpe_vocab_size, progress=True)
            else:
                self._say(f"training a {s.bpe_vocab_size}-token BPE on the corpus (pass --tokenizer to reuse one)")
                tokenizer = Tokenizer.train(read_corpus(paths, self.separator), s.bpe_vocab_size, progress=True)
            if tokenizer is not None:
                tokenizer.save(root)
        distributed.barrier(self.world)
        return Tokenizer.from_file(root) if (root / TOKENIZER_FILE).exists() else None

    def _model(self, config: Config | None, resume: bool) -> Transformer:
        s = self.settings
        if resume:
            model, _ = load(self.run.latest(), dtype="float32", device=self.device)
            if s.dropout is not None and lora_layers(model):
                # an adapter checkpoint is built from its base model's config, without the --dropout
                # that set_dropout gave the run when it started (a whole checkpoint keeps its own)
                model.set_dropout(s.dropout)
            return model.train()
        if s.init_from:
            model, own = load(s.init_from, dtype="float32", device=self.device)  # trainable: never quantized
            if self.tokenizer is None:
                if own is None:
                    raise LucidError(f"{s.init_from} has no tokenizer to encode the corpus with; pass --tokenizer")
                self.tokenizer = own
                if self.main:
                    own.save(self.run.path)
                distributed.barrier(self.world)
            if self.tokenizer.vocab_size > model.config.vocab_size:
                raise LucidError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but {s.init_from} has "
                                 f"embeddings for {model.config.vocab_size}: the vocabulary does not fit the model")
            if s.dropout is not None:
                model.set_dropout(s.dropout)
            model = model.float()
            if lora_layers(model) and not s.lora:  # all weights train: the adapters fold in first
                merge_lora(model)
                for p in model.parameters():
                    p.requires_grad_(True)
            if s.lora:
                settings = LoRASettings(s.rank, s.lora_alpha, s.lora_dropout, tuple(s.lora_targets))
                trainable = add_lora(model, settings)
                total = sum(p.numel() for p in model.parameters())
                self._say(f"LoRA: rank {s.rank}, alpha {s.lora_alpha:g} on {', '.join(s.lora_targets)}: "
                          f"{trainable:,} trainable parameters ({trainable / total:.2%} of {total:,})")
            return model.train()
        if config is None:
            raise LucidError("no model to train: give --preset, a [model] table in --config, or --init-from")
        vocab = self.tokenizer.vocab_size
        if self.explicit_vocab:
            if config.vocab_size < vocab:
                raise LucidError(f"the tokenizer has {vocab} tokens but the model's vocab_size is {config.vocab_size}: "
                                 f"the vocabulary does not fit the model")
            vocab = config.vocab_size  # a larger table is allowed (e.g. rounded up for speed)
        config = config.replace(vocab_size=vocab, **({"dropout": s.dropout} if s.dropout is not None else {}))
        if config.is_encoder_decoder and config.decoder_start_token_id is None:
            config = config.replace(decoder_start_token_id=self.tokenizer.eos_token_id)  # BART's choice
        with torch.device(self.device):
            model = Transformer(config)
        return model.train()

    def _data(self) -> None:
        s = self.settings
        if self.objective.own_data:  # records with their own loss masks (instruction tuning)
            paths = check_data_paths(s)
            self.train_windows, self.val_windows, said = self.objective.datasets(paths, self.window)
            self._say(said)
            self.batches = Batches(self.train_windows, s.batch_size, s.sampling, s.seed, self.world.rank,
                                   self.world.size)
            self.baseline = None
            return
        folder = self.run.path / "data"
        if self.main:
            prepare(check_data_paths(s), self.tokenizer, folder, s.val_fraction, self.separator,
                    self.objective.encode_document)
        distributed.barrier(self.world)
        pad = self.tokenizer.pad_token_id or 0
        stride = s.stride or (1 if s.sampling == "random" else self.window)
        train = open_split(folder, "train")
        if len(train) < self.window + 1 and not self.objective.records:  # pairs: no windows
            raise LucidError(f"the training text is shorter than one window: {len(train)} tokens after the "
                             f"validation split, a window needs {self.window + 1}; use more text or a smaller --window")
        self.train_windows = self.objective.dataset(Windows(train, self.window, stride, pad))
        val = open_split(folder, "val")
        self.val_windows = self.objective.dataset(Windows(val, self.window, stride, pad))
        if len(self.val_windows) == 0:
            self.val_windows = None  # --val-fraction 0, or too little text left for one window
        self.batches = Batches(self.train_windows, s.batch_size, s.sampling, s.seed, self.world.rank, self.world.size)
        self.baseline = self.objective.baseline(train, val)

    def _autocast(self):
        return autocast_context(self.device, self.settings.autocast)

    def _restore(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.best_val = state["step"], state["best_val"]
        self.tokens_seen, self.elapsed = state["tokens_seen"], state["elapsed"]
        self.batches.restore(state["batches"])
        if self.main:
            self.run.truncate_metrics(self.step)
            info = self.run.read()
            info["settings"] = self.settings.to_dict()  # e.g. a longer --max-iters given with --resume
            self.run.write(info)

    # --- the loop ----------------------------------------------------------------------------------

    def _say(self, text: str) -> None:
        if self.world.is_main:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    @torch.enable_grad()  # even if the caller switched gradients off globally
    def train_step(self) -> float:
        s = self.settings
        lr = learning_rate(self.step, s.learning_rate, s.min_lr, s.warmup_iters, s.lr_decay_iters or s.max_iters)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._seed_dropout()
        total = 0.0
        self.step_tokens = 0
        for micro in range(s.grad_accum):
            batch = {name: t.to(self.device) for name, t in self.batches.next().items()}
            # Only the last micro-batch synchronises gradients across processes.
            sync = self.world.distributed and micro < s.grad_accum - 1
            with (self.train_model.no_sync() if sync else contextlib.nullcontext()), self.autocast():
                loss = self.objective.loss(self.train_model, batch) / s.grad_accum
                loss.backward()
            total += float(loss.detach())
            self.step_tokens += self.objective.tokens(batch) * self.world.size
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_seen += self.step_tokens
        self.lr = lr
        return float(distributed.average(torch.tensor(total), self.world))

    def _seed_dropout(self) -> None:
        """Dropout masks come from (seed, process, step): each process draws its own, and a resumed
        run draws the same ones again, with no generator state to save (only rank 0 writes)."""
        seed = self.settings.seed + 1 + self.world.rank + self.world.size * self.step
        if self.device.type == "cpu":
            torch.default_generator.manual_seed(seed)  # 1 us; torch.manual_seed visits every backend (75 us)
        else:
            torch.manual_seed(seed)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss on the same fixed batches at every evaluation, for train and validation."""
        s = self.settings
        self.model.eval()
        out = {}
        for name, windows in (("eval_train_loss", self.train_windows), ("val_loss", self.val_windows)):
            if windows is None:
                continue
            batches = Batches(windows, s.batch_size, "random", s.seed + 1, self.world.rank, self.world.size)
            losses = []
            for _ in range(s.eval_iters):
                batch = {name: t.to(self.device) for name, t in batches.next().items()}
                with self.autocast():
                    losses.append(float(self.objective.loss(self.model, batch)))
            out[name] = float(distributed.average(torch.tensor(sum(losses) / len(losses)), self.world))
        if "val_loss" in out:
            out["val_ppl"] = math.exp(min(out["val_loss"], 50.0))
        self.model.train()
        return out

    def sample(self) -> str:
        """What the model makes of text now: a short generated text, or a masked window filled in."""
        if self.settings.sample_tokens == 0:
            return ""
        self.model.eval()
        text = self.objective.sample(self.model, self.val_windows or self.train_windows)
        self.model.train()
        return text

    def save(self, is_best: bool = False) -> Path | None:
        if not self.main:
            return None
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "batches": self.batches.state(), "best_val": self.best_val, "tokens_seen": self.tokens_seen,
                 "elapsed": self.elapsed}
        return self.run.save_checkpoint(self.step, self.model, self.tokenizer, state, is_best,
                                        self.settings.keep_last, {"step": self.step})

    def fit(self) -> dict[str, Any]:
        with deterministic_algorithms(self.settings.deterministic):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        s = self.settings
        from tqdm import tqdm

        bar = tqdm(total=s.max_iters, initial=self.step, disable=not self.main or None, unit="it",
                   dynamic_ncols=True, file=sys.stderr)
        records = self.run.read_metrics() if self.main else []
        if self.step == 0:
            if self.baseline is not None:
                self._say(describe_baseline(self.baseline))
            result = self.evaluate()  # every process takes part in the all-reduce
            if self.main:  # the starting point of the curves
                records.append({"step": 0, **result})
                self.run.append_metrics(records[-1])
                self._log_eval(records, result)
        last_saved = self.step
        try:
            while self.step < s.max_iters:
                tick = time.perf_counter()
                loss = self.train_step()
                if not math.isfinite(loss):
                    latest = self.run.read().get("latest") if self.main else None
                    kept = f"{self.run.path}/{latest}" if latest else "none was written yet"
                    raise TrainingStopped(f"the loss became {loss} at step {self.step + 1}; stopped without saving. "
                                          f"Last good checkpoint: {kept}. Try a lower --learning-rate")
                seconds = time.perf_counter() - tick
                self.elapsed += seconds
                self.step += 1
                record = {"step": self.step, "train_loss": loss, "lr": self.lr, "ms_per_iter": seconds * 1000,
                          "tokens_per_s": self.step_tokens / seconds}
                evaluating = self.step % s.eval_interval == 0 or self.step == s.max_iters
                if evaluating:
                    record.update(self.evaluate())
                if self.main and (self.step % s.log_interval == 0 or evaluating):
                    records.append(record)
                    self.run.append_metrics(record)
                    bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                bar.update(1)
                is_best = evaluating and record.get("val_loss", math.inf) < self.best_val
                if is_best:
                    self.best_val = record["val_loss"]
                if evaluating and self.main:
                    self._log_eval(records, record)
                if (s.checkpoint_interval and self.step % s.checkpoint_interval == 0) or self.step == s.max_iters \
                        or is_best:
                    self.save(is_best)
                    last_saved = self.step
        except KeyboardInterrupt:
            bar.close()
            if self.step > last_saved:
                self.save()
            if self.main and not self.run.read().get("latest"):
                self._say(f"interrupted at step {self.step}, before any step finished: there is no checkpoint to "
                          "resume from")
            else:
                self._say(self.describe_interruption())
            raise
        finally:
            bar.close()
        return self.summary()

    def _log_eval(self, records: list[dict], result: dict[str, float]) -> None:
        parts = [f"step {self.step}"] + [f"{k} {v:.4f}" for k, v in result.items() if k in ("eval_train_loss",
                                                                                              "val_loss", "val_ppl")]
        self._say(" | ".join(parts))
        text = self.sample()
        if text:
            self._say("sample: " + text.replace("\n", "\n        ")[:2000])
            with open(self.run.path / "samples.txt", "a", encoding="utf-8") as f:
                f.write(f"--- step {self.step} ---\n{text}\n")
        if self.settings.plot:
            plot_losses(records, self.run.path / "loss.png", f"{self.run.path.name}: loss")

    def summary(self) -> dict[str, Any]:
        records = self.run.read_metrics() if self.main else []
        steps = [r for r in records if "ms_per_iter" in r]
        evals = [r for r in records if "val_loss" in r]
        result = {"steps": self.step, "tokens_seen": self.tokens_seen, "train_seconds": round(self.elapsed, 2),
                  "ms_per_iter": round(sum(r["ms_per_iter"] for r in steps) / max(len(steps), 1), 3),
                  "final_val_loss": evals[-1]["val_loss"] if evals else None,
                  "final_train_loss": evals[-1].get("eval_train_loss") if evals else None,
                  "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                  "run": str(self.run.path)}
        if self.main:
            self._say(self.describe_end(result))
        return result

    def describe_interruption(self) -> str:
        return f"interrupted at step {self.step}; checkpoint saved. Continue with: lucidlm train --resume {self.run.path}"

    def describe_end(self, result: dict[str, Any]) -> str:
        info = self.run.read()
        return (f"done: {self.step} steps, {self.tokens_seen:,} tokens in {self.elapsed:.1f} s "
                f"({result['ms_per_iter']:.1f} ms/step); best validation loss "
                f"{result['best_val_loss'] if result['best_val_loss'] is not None else '-'}; "
                f"best checkpoint {info.get('best') or info.get('latest')}; "
                f"{self.objective.try_it(str(self.run.path))}")

    def close(self, clean: bool = True) -> None:
        """clean: training finished on every process (not stopped by an error or Ctrl-C)."""
        self.train_model = self.model  # drop the DistributedDataParallel wrapper (see distributed.leave)
        distributed.leave(self.world, clean)

