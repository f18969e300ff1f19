"""TrainSettings: how to train, kept apart from the model's Config (what to train).

Values come, in rising priority, from the defaults, a training preset, a TOML file and command-
line flags. The flags are generated from the dataclass fields, so a new setting is one new field.
A TOML file may also carry a [model] table of Config fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PRESETS, Config
from ..errors import ConfigError, LucidError, check_known_fields
from ..flags import add_flags, given, setting, type_problems
from ..model.lora import ROLES
from ..options import MAX_THREADS
from .conversations import PROMPT_FORMATS

OBJECTIVES = ("next-token", "mlm", "seq2seq", "sft")


@dataclass
class TrainSettings:
    data: list[str] = setting([], "corpus file(s), UTF-8 text; each file is one document", metavar="FILE")
    tokenizer: str | None = setting(None, "'char', 'ascii', 'bytes', 'words', or a tokenizer folder or file; "
                                          "unset: the preset's choice, "
                                          "the --init-from model's own, or a BPE trained on the corpus")
    out: str | None = setting(None, "the run folder")
    preset: str | None = setting(None, "a model with its training settings (the presets are listed above)")
    init_from: str | None = setting(None, "a pretrained model to fine-tune (all weights)")
    objective: str = setting("next-token", "what the model learns: 'next-token' (GPT), 'mlm' (BERT's masked "
                                           "tokens, for a bidirectional model) or 'seq2seq' (an encoder-decoder "
                                           "learns each line's target from its source: source<TAB>target) or "
                                           "'sft' (instruction tuning on JSONL records, lucidlm finetune)")
    mask_probability: float = setting(0.15, "mlm: the share of tokens chosen for prediction (of those, 8 in 10 "
                                            "become [MASK], 1 a random token, 1 stays)")
    whole_word_mask: bool = setting(False, "mlm: choose whole words (all their ## pieces), not single pieces")
    prompt_format: str = setting("auto", "sft: how instruction records are shown to the model: 'chat' (its chat "
                                         "template), 'alpaca', or 'auto' (chat when the tokenizer has a template)")
    train_on_prompt: bool = setting(False, "sft: learn the prompts' tokens too, not only the answers'")
    lora: bool = setting(False, "train low-rank adapters (LoRA) beside the frozen --init-from weights instead of "
                                "all weights")
    rank: int = setting(8, "LoRA: the adapters' rank r")
    lora_alpha: float = setting(16.0, "LoRA: the adapters' output is scaled by alpha / r")
    lora_dropout: float = setting(0.0, "LoRA: dropout on the adapters' input")
    lora_targets: list[str] = setting(["q", "v"], "LoRA: which matrices of each block get adapters, among "
                                                  + ", ".join(ROLES), metavar="ROLE")
    max_iters: int = setting(2000, "optimizer steps")
    batch_size: int = setting(12, "windows per micro-batch, per process")
    window: int | None = setting(None, "tokens per training window; unset: the model's context length")
    stride: int | None = setting(None, "tokens between window starts; unset: 1 when sampling randomly, "
                                       "else the window")
    sampling: str = setting("random", "'random' windows (nanoGPT) or 'ordered' passes over the data")
    val_fraction: float = setting(0.1, "the share of the corpus's tokens, from its end, kept for validation")
    doc_separator: str | None = setting(None, "also split each file into documents at this string")
    learning_rate: float = setting(1e-3, "peak learning rate, after warmup")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay")
    warmup_iters: int = setting(100, "steps of linear warmup")
    lr_decay_iters: int | None = setting(None, "step where the cosine decay ends; unset: --max-iters")
    weight_decay: float = setting(0.1, "AdamW weight decay, on matrices only")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.99, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the gradient norm to this; 0: off")
    grad_accum: int = setting(1, "micro-batches per optimizer step")
    eval_interval: int = setting(250, "steps between evaluations (loss, sample, plot)")
    eval_iters: int = setting(20, "batches per evaluation")
    log_interval: int = setting(1, "steps between metrics.jsonl records")
    checkpoint_interval: int = setting(250, "steps between checkpoints; 0: only at the end and on Ctrl-C")
    keep_last: int = setting(3, "checkpoints kept besides the best")
    seed: int = setting(1337, "seed for the weights, batches, dropout and samples")
    device: str = setting("auto", "auto, cpu, cuda or mps")
    autocast: str = setting("auto", "'auto': bfloat16 where the device computes in it natively, 'gpu': only on a "
                                    "GPU, 'bf16', 'off'")
    dropout: float | None = setting(None, "override the model's dropout")
    sample_tokens: int = setting(200, "tokens of text sampled at each evaluation; 0: none")
    sample_temperature: float = setting(0.8, "temperature of those samples")
    bpe_vocab_size: int = setting(4096, "vocabulary size when a tokenizer is trained on the corpus (a BPE, or a "
                                        "WordPiece for --objective mlm)")
    threads: int | None = setting(None, "CPU threads for torch; unset: all cores")
    plot: bool = setting(True, "redraw loss.png at each evaluation")
    # On CUDA some kernels add in a racy order, so two runs differ in the last bits.
    deterministic: bool = setting(False, "bit-identical reruns and resumes on CUDA, at some cost in speed "
                                         "(CPU training is deterministic either way)")

    def validate(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"training setting {name}: {why} (got {getattr(self, name)!r})")

        for name, kind in type_problems(self):  # first: the rules below compare numbers
            need(False, name, f"has the wrong type (expected: {kind})")
        for name in ("max_iters", "batch_size", "grad_accum", "eval_interval", "eval_iters", "log_interval",
                     "keep_last", "bpe_vocab_size"):
            need(getattr(self, name) >= 1, name, "must be at least 1")
        for name in ("checkpoint_interval", "warmup_iters", "sample_tokens"):
            need(getattr(self, name) >= 0, name, "must be >= 0")
        for name in ("window", "stride", "lr_decay_iters", "threads"):
            value = getattr(self, name)
            need(value is None or value >= 1, name, "must be at least 1")
        need(0 < self.learning_rate < 10 and 0 <= self.min_lr <= self.learning_rate, "learning_rate",
             "needs 0 < min_lr <= learning_rate < 10")
        need(0.0 <= self.val_fraction < 1.0, "val_fraction", "must be in [0, 1)")
        need(self.sampling in ("random", "ordered"), "sampling", "must be random or ordered")
        need(self.objective in OBJECTIVES, "objective", f"must be one of {', '.join(OBJECTIVES)}")
        need(self.prompt_format in PROMPT_FORMATS, "prompt_format", f"must be one of {', '.join(PROMPT_FORMATS)}")
        need(not self.lora or self.init_from is not None, "lora", "adapters go on a pretrained model: give --init-from")
        need(self.rank >= 1, "rank", "must be at least 1")
        need(self.lora_alpha > 0, "lora_alpha", "must be > 0")
        need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        need(bool(self.lora_targets) and all(t in ROLES for t in self.lora_targets), "lora_targets",
             f"must name some of {', '.join(ROLES)}")
        need(0 < self.mask_probability < 1, "mask_probability", "must be in (0, 1)")
        need(self.autocast in ("auto", "gpu", "bf16", "off"), "autocast", "must be auto, gpu, bf16 or off")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must be in [0, 1)")
        need(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay", "decay and clipping must be >= 0")
        need(self.dropout is None or 0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.sample_temperature >= 0, "sample_temperature", "must be >= 0")
        # torch takes seeds below 2**64, and dropout's seed adds the step (and the process) to it
        need(0 <= self.seed < 2 ** 63, "seed", "must be in [0, 2**63)")
        need(self.threads is None or self.threads <= MAX_THREADS, "threads", f"must be at most {MAX_THREADS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainSettings":
        check_known_fields(cls, data, "unknown training setting(s):")
        return cls(**data)


# Training presets: a model (from config.PRESETS) plus the settings that go with it.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # nanoGPT's documented CPU example: char-level tinyshakespeare, batch 12, context 64, 4x4x128,
    # AdamW (0.9, 0.99) wd 0.1, lr 1e-3, 100 warmup, cosine to 1e-4 at 2000, clip 1.0,
    # evaluation every 250 iterations on 20 batches.
    "shakespeare-char": dict(tokenizer="char", max_iters=2000, batch_size=12, learning_rate=1e-3, min_lr=1e-4,
                             warmup_iters=100, lr_decay_iters=2000, weight_decay=0.1, beta1=0.9, beta2=0.99,
                             grad_clip=1.0, eval_interval=250, eval_iters=20, val_fraction=0.1),
    # A small GPT over a BPE vocabulary trained on the corpus (or --tokenizer).
    "small-bpe": dict(tokenizer=None, max_iters=5000, batch_size=16, learning_rate=6e-4, min_lr=6e-5,
                      warmup_iters=200, eval_interval=500, eval_iters=20),
    "tiny-llama": dict(tokenizer=None, max_iters=5000, batch_size=16, learning_rate=6e-4, min_lr=6e-5,
                       warmup_iters=200, eval_interval=500, eval_iters=20),
    # femto and pico on word tokens (data/friends.txt: seconds per hundred steps on a CPU). A width of
    # 2 learns slowly at nanoGPT's rate, so the rate is higher.
    "femto": dict(tokenizer="words", max_iters=1500, batch_size=32, learning_rate=1e-2, min_lr=1e-3,
                  warmup_iters=50, weight_decay=0.0, eval_interval=250, eval_iters=10, sample_tokens=40),
    "pico": dict(tokenizer="words", max_iters=1500, batch_size=32, learning_rate=1e-2, min_lr=1e-3,
                 warmup_iters=50, weight_decay=0.0, eval_interval=250, eval_iters=10, sample_tokens=40),
    # Masked-LM pre-training of a small BERT over a WordPiece vocabulary trained on the corpus.
    "tiny-bert": dict(tokenizer=None, objective="mlm", bpe_vocab_size=2048, max_iters=2000, batch_size=32,
                      learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=250, eval_iters=20),
    # A small encoder-decoder that learns to translate pairs (lucidlm data pairs writes some).
    "tiny-translator": dict(tokenizer=None, objective="seq2seq", bpe_vocab_size=512, max_iters=2000, batch_size=64,
                            learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, eval_interval=500, eval_iters=10),
}


def add_setting_flags(parser: argparse.ArgumentParser, defaults: TrainSettings | None = None,
                      title: str = "training settings (defaults: the preset's, else nanoGPT-like)") -> None:
    """One flag per TrainSettings field; every default is None so we can tell what was given.
    defaults: the values the help shows (a verb's own starting point)."""
    add_flags(parser, TrainSettings, defaults or TrainSettings(), title)


def read_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise LucidError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LucidError(f"{path} is not valid TOML: {exc}") from None


def resolve(args: argparse.Namespace, base: TrainSettings | None = None,
            base_config: Config | None = None) -> tuple[TrainSettings, Config | None, bool]:
    """Settings, the model Config (None when fine-tuning) and whether the user set the model's
    vocab_size, from preset < TOML < flags."""
    values: dict[str, Any] = base.to_dict() if base is not None else {}
    model_fields: dict[str, Any] = base_config.to_dict() if base_config is not None else {}
    toml = read_toml(args.config) if getattr(args, "config", None) else {}
    toml_model = toml.pop("model", {}) if isinstance(toml.get("model"), dict) else {}
    flags = given(args, TrainSettings)
    preset = flags.get("preset") or toml.get("preset") or values.get("preset")
    if base is None and preset is not None:
        if preset not in TRAIN_PRESETS:
            raise LucidError(f"unknown preset {preset!r} (known: {', '.join(TRAIN_PRESETS)})")
        values.update(TRAIN_PRESETS[preset])
        model_fields = PRESETS[preset].to_dict()
    values.update(toml)
    values.update(flags)
    settings = TrainSettings.from_dict({**TrainSettings().to_dict(), **values})
    settings.validate()
    if toml_model:
        if settings.init_from:
            raise LucidError("a [model] table cannot change a model loaded with --init-from")
    config = Config.from_dict(model_fields) if model_fields else None
    if toml_model:
        config = config.replace(**toml_model) if config is not None else Config.from_dict(toml_model)
    return settings, config, "vocab_size" in toml_model


def check_data_paths(settings: TrainSettings) -> list[Path]:
    if not settings.data:
        raise LucidError("no training data: pass --data FILE (or set data in the TOML file)")
    paths = [Path(p) for p in settings.data]
    for path in paths:
        if not path.is_file():
            raise LucidError(f"{path}: no such file")
    return paths
