"""TrainSettings: how to train, kept apart from the model's Config (what to train).

Values come, in rising priority, from the defaults, a training preset, a TOML file and command-
line flags. The flags are generated from the dataclass fields, so a new setting is one new field.
A TOML file may also carry a [model] table of Config fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PRESETS, Config
from ..errors import ConfigError, LucidError, check_known_fields


@dataclass
class TrainSettings:
    data: list[str] = field(default_factory=list)  # corpus files (UTF-8); each file is one document
    tokenizer: str | None = None  # "char", a tokenizer folder/file, or None: the preset's choice
    out: str | None = None  # the run folder
    preset: str | None = None
    init_from: str | None = None  # a pretrained model to fine-tune (all weights)
    max_iters: int = 2000
    batch_size: int = 12  # windows per micro-batch, per process
    window: int | None = None  # tokens per training window; None: the model's context length
    stride: int | None = None  # between window starts; None: 1 when sampling randomly, else window
    sampling: str = "random"  # "random" windows (nanoGPT) or "ordered" passes over the data
    val_fraction: float = 0.1
    doc_separator: str | None = None  # also split each file into documents at this string
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None  # None: max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: off
    grad_accum: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 1
    checkpoint_interval: int = 250  # 0: only at the end (and on Ctrl-C)
    keep_last: int = 3
    seed: int = 1337
    device: str = "auto"
    autocast: str = "auto"  # "auto": bfloat16 on devices that support it, "bf16", "off"
    dropout: float | None = None  # overrides the model's dropout
    sample_tokens: int = 200  # text sampled at each evaluation (0: none)
    sample_temperature: float = 0.8
    bpe_vocab_size: int = 4096  # when a BPE tokenizer is trained on the corpus
    threads: int | None = None
    plot: bool = True
    # Bit-identical reruns and resumes on CUDA, where some kernels add in a racy order, at some cost
    # in speed. CPU training is deterministic either way.
    deterministic: bool = False

    def validate(self) -> None:
        def need(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"training setting {name}: {why} (got {getattr(self, name)!r})")

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
        need(self.autocast in ("auto", "bf16", "off"), "autocast", "must be auto, bf16 or off")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1", "betas must be in [0, 1)")
        need(self.weight_decay >= 0 and self.grad_clip >= 0, "weight_decay", "decay and clipping must be >= 0")
        need(self.dropout is None or 0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        need(self.sample_temperature >= 0, "sample_temperature", "must be >= 0")

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
}


def _scalar_type(annotation) -> type:
    """int | None -> int; list[str] -> str."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return args[0]
    return args[0] if args else annotation


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainSettings field; every default is None so we can tell what was given."""
    group = parser.add_argument_group("training settings (defaults: the preset's, else nanoGPT-like)")
    defaults = TrainSettings()
    hints = typing.get_type_hints(TrainSettings)
    for f in dataclasses.fields(TrainSettings):
        flag = "--" + f.name.replace("_", "-")
        kind = _scalar_type(hints[f.name])
        default = getattr(defaults, f.name)
        if f.name == "data":
            group.add_argument(flag, nargs="+", default=None, help="corpus file(s), UTF-8 text")
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default: {default})")
        else:
            group.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(),
                               help=f"(default: {default})")


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
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainSettings)
             if getattr(args, f.name, None) is not None}
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
        model_fields.update(toml_model)
    config = Config.from_dict(model_fields) if model_fields else None
    return settings, config, "vocab_size" in toml_model


def check_data_paths(settings: TrainSettings) -> list[Path]:
    if not settings.data:
        raise LucidError("no training data: pass --data FILE (or set data in the TOML file)")
    paths = [Path(p) for p in settings.data]
    for path in paths:
        if not path.is_file():
            raise LucidError(f"{path}: no such file")
    return paths
