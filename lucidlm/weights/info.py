"""`lucidlm info MODEL`: what a model file is, read from its metadata without loading the weights.

Architecture, parameter count (from a model built on the meta device), stored and compute dtypes,
context length, tokenizer kind and whether a chat template is present.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter
from pathlib import Path

from ..config import Config
from ..default_model import default_model_path
from ..model.quant import NATIVE, form_bytes, form_of, tiles_available
from ..tokenizer import UnitTokenizer
from .row_blocks import QUANTIZABLE
from .sources import GGUFSource, open_source

FORM_NAMES = {"int4": "int4 (scale and zero per 32)", "int8 groups": "int8 as two int4 halves (scale per 32)",
              "int8": "int8 (scale per row)", "int4 tiles": "int4 in 16-row tiles (scale and min per 32)",
              "int8 tiles": "int8 in 16-row tiles (scale per 32)"}


def _mechanisms(config: Config) -> str:
    attention = ("MHA" if config.n_kv_heads == config.n_heads else
                 "MQA" if config.n_kv_heads == 1 else f"GQA {config.n_heads}/{config.n_kv_heads}")
    mlp = f"{'gated ' if config.gated_mlp else ''}{config.activation}"
    window = f", window {config.sliding_window}" if config.sliding_window else ""
    encoder = ", encoder-decoder (cross-attention)" if config.is_encoder_decoder else \
        "" if config.causal else ", bidirectional"
    segments = f", {config.token_types} token types" if config.token_types else ""
    head = {"lm": "", "mlm": ", masked-LM head", "none": ", no head",
            "classify": f", classification head ({config.n_labels} labels)"}[config.head]
    pooling = f", {config.pooling} pooling{' (normalised)' if config.normalize_pooled else ''}" \
        if config.pooling != "none" else ""
    return (f"{config.norm} ({config.norm_placement}), {config.position} positions, {attention}, {mlp} MLP"
            f"{window}{encoder}{segments}{head}{pooling}")


def _tokenizer_rows(tokenizer) -> list[tuple[str, str]]:
    if tokenizer is None:
        return [("tokenizer", "none"), ("chat template", "no")]
    kind = {"char": "characters", "ascii": "ASCII code points", "bytes": "UTF-8 bytes", "words": "words",
            "wordpiece": f"WordPiece ({'lowercased' if getattr(tokenizer, 'lowercase', False) else 'cased'})"}.get(
        tokenizer.kind) or f"byte-level BPE ({tokenizer.pre_tokenizer.name or 'custom'} split, {tokenizer.merge_rule})"
    template = "yes" if tokenizer.chat_template else \
        "no (chat is a plain transcript)" if isinstance(tokenizer, UnitTokenizer) else \
        {"wordpiece": "no (an encoder does not chat)"}.get(tokenizer.kind, "no (ChatML fallback)")
    return [("tokenizer", f"{kind}, {tokenizer.vocab_size} tokens"), ("chat template", template)]


def in_memory(tensors) -> tuple[list[tuple[str, str, str, str]], int, int]:
    """Per GGUF tensor (name, shape, file type, in-memory form), and the bytes with dtype "auto"
    and in float32. Quantized matrices keep (or convert to) a block form on the CPU."""
    rows, auto, dense = [], 0, 0
    for info in tensors:
        numel = math.prod(info.shape)
        dense += numel * 4
        if len(info.shape) == 2 and info.type_name in QUANTIZABLE:
            form = form_of(info.type_name)
            auto += form_bytes(form, info.shape)
            label = FORM_NAMES[form] + ("" if info.type_name in NATIVE else ", converted")
        else:
            auto += numel * 4
            label = "float32"
        rows.append((info.name, "x".join(map(str, info.shape)), info.type_name, label))
    return rows, auto, dense


def _memory_rows(tensors, auto: int, dense: int) -> list[tuple[str, str]]:
    """The "in memory" and "computes in" rows from in_memory's answer."""
    forms = Counter(f"{kind} as {label}" for _, _, kind, label in tensors)
    return [("in memory", f"{auto / 2 ** 20:.1f} MiB with --dtype auto (the default): "
                          + ", ".join(f"{k} x{n}" for k, n in forms.items())
                          + f"; {dense / 2 ** 20:.1f} MiB with --dtype float32"),
            ("computes in", "float32; quantized matrices take activations rounded to int8 per 32 (lucidlm's C kernel)"
             if tiles_available() else "float32, quantized matrices through bfloat16 kernels on the CPU")]


def describe(path: str | Path | None, tensors: bool = False) -> list[tuple[str, str]]:
    with open_source(path if path is not None else default_model_path()) as source:
        parameters = source.meta_model().num_parameters()
        config, about, tokenizer = source.config, source.describe(), source.tokenizer()
        if isinstance(source, GGUFSource):
            listing, auto, dense = in_memory(source.gguf.tensors.values())
            memory = _memory_rows(listing, auto, dense)
        else:
            listing, memory = [], [("computes in", "float32 by default (--dtype bfloat16 to halve memory)")]
    listing = listing if tensors else []
    return [
        ("path", str(source.path)),
        ("architecture", about["architecture"]),
        ("name", about["name"]),
        ("mechanisms", _mechanisms(config)),
        ("parameters", f"{parameters:,}"),
        ("layers x width", f"{config.n_layers} x {config.d_model} (heads {config.n_heads}, head dim {config.head_dim}, "
                           f"MLP {config.d_ff})" + (f"; the encoder's: {config.encoder_layers} x {config.d_model}"
                                                    if config.is_encoder_decoder else "")),
        ("context length", f"{config.context_length:,} tokens"),
        ("stored as", about["stored as"]),
        *memory,
        ("tied embeddings", "yes" if config.tie_embeddings else "no"),
    ] + _tokenizer_rows(tokenizer) + [(name, f"{shape:<12} {kind:<6} -> {label}") for name, shape, kind, label in listing]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="a GGUF file, a model folder or a run folder (default: SmolLM2-135M)")
    parser.add_argument("--tensors", action="store_true",
                        help="also list every tensor of a GGUF file: shape, stored type, in-memory form")


def main(args: argparse.Namespace) -> int:
    rows = describe(args.model, tensors=args.tensors)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
