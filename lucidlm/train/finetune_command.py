"""`lucidlm finetune`: instruction tuning of a pretrained model, all weights or LoRA adapters, on the
trainer of `lucidlm train` with settings of its own; `--merge` folds a LoRA run's adapters into a
plain model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..default_model import default_model_path
from ..errors import LucidError
from ..model.lora import lora_layers, merge_lora
from ..weights import load, save
from .command import train_main
from .settings import TrainSettings, add_setting_flags

# Where `lucidlm finetune` starts: instruction tuning with a small learning rate for a few hundred
# steps (LoRA's usual 2e-4; pass --learning-rate 2e-5 or so without --lora), no weight decay.
# bfloat16 autocast on GPUs only: on an AVX512-BF16 CPU it ran LoRA steps of SmolLM2-135M at 0.57-0.67x
# the float32 speed (bench/finetune.py), its 400 x 576 x 1536 matmuls 1.6x slower in bfloat16.
FINETUNE_DEFAULTS = dict(objective="sft", max_iters=300, batch_size=8, learning_rate=2e-4, min_lr=2e-5,
                         warmup_iters=20, weight_decay=0.0, eval_interval=50, eval_iters=10,
                         checkpoint_interval=100, sample_tokens=48, val_fraction=0.1, autocast="gpu")


def finetune_defaults() -> TrainSettings:
    return TrainSettings.from_dict({**TrainSettings().to_dict(), **FINETUNE_DEFAULTS})


def add_finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fine-tune a pretrained model on instructions or chats (JSONL: {\"messages\": [...]}, {\"instruction\", "
        "\"input\", \"output\"} or {\"text\"}), the loss on the answers only. --lora trains low-rank adapters "
        "(saved in PEFT's format) instead of all weights. Checkpoints, resume and Ctrl-C work as in "
        "lucidlm train; --merge RUN folds a LoRA run's adapters into a plain model.")
    parser.add_argument("--model", help="the pretrained model (default: SmolLM2-135M-Instruct); same as --init-from")
    parser.add_argument("--config", help="TOML file of training settings")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder where it stopped")
    parser.add_argument("--force", action="store_true", help="start over in an --out folder that holds another run")
    parser.add_argument("--merge", metavar="RUN", help="write RUN's model with its adapters folded in to --out "
                                                       "(default RUN/merged), then stop")
    add_setting_flags(parser, finetune_defaults(), "fine-tuning settings")


def finetune_main(args: argparse.Namespace) -> int:
    if args.merge:
        return merge_main(args)
    if args.model is not None:
        if args.resume:
            raise LucidError("a resumed run keeps the base model it started from; leave out --model")
        if args.init_from is not None and args.init_from != args.model:
            raise LucidError("--model and --init-from name the same thing: give one")
        args.init_from = args.model
    if args.init_from is None and not args.resume:
        args.init_from = str(default_model_path())
    return train_main(args, finetune_defaults())


def merge_main(args: argparse.Namespace) -> int:
    run = Path(args.merge)
    out = Path(args.out) if args.out else run / "merged"
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
        raise LucidError(f"{out} is not empty; pass --force to replace it")
    model, tokenizer = load(run, dtype="float32")
    layers = len(lora_layers(model))
    if not layers:
        raise LucidError(f"{run} has no LoRA adapters to merge (it is a whole model already)")
    merge_lora(model)
    save(model, tokenizer, out)
    print(f"folded the adapters of {layers} layers into {model.source}'s weights: {out}\n"
          f"chat with it: lucidlm chat --model {out}")
    return 0
