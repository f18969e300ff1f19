"""`lucidlm info MODEL`: what a model file is, read from its metadata without loading the weights.

Architecture, parameter count (from a model built on the meta device), stored and compute dtypes,
context length, tokenizer kind and whether a chat template is present.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from ..config import Config
from ..errors import FormatError
from ..model import Transformer


def _parameters(config: Config) -> int:
    with torch.device("meta"):
        return Transformer(config).num_parameters()


def _mechanisms(config: Config) -> str:
    attention = ("MHA" if config.n_kv_heads == config.n_heads else
                 "MQA" if config.n_kv_heads == 1 else f"GQA {config.n_heads}/{config.n_kv_heads}")
    mlp = f"{'gated ' if config.gated_mlp else ''}{config.activation}"
    window = f", window {config.sliding_window}" if config.sliding_window else ""
    return f"{config.norm} ({config.norm_placement}), {config.position} positions, {attention}, {mlp} MLP{window}"


def _tokenizer_rows(tokenizer) -> list[tuple[str, str]]:
    if tokenizer is None:
        return [("tokenizer", "none"), ("chat template", "no")]
    kind = "characters" if tokenizer.kind == "char" else \
        f"byte-level BPE ({tokenizer.pre_tokenizer.name or 'custom'} split, {tokenizer.merge_rule})"
    template = "yes" if tokenizer.chat_template else \
        "no (chat is a plain transcript)" if tokenizer.kind == "char" else "no (ChatML fallback)"
    return [("tokenizer", f"{kind}, {tokenizer.vocab_size} tokens"), ("chat template", template)]


def describe(path: str | Path | None) -> list[tuple[str, str]]:
    from ..default_model import default_model_path
    from ..gguf_file import GGUFFile
    from ..tokenizer.formats import OUR_FILE, load_ours, load_tokenizer_json, tokenizer_from_gguf
    from .checkpoint import CHECKPOINT_FILE, RUN_FILE, latest_checkpoint
    from .gguf_model import config_from_gguf
    from .hf_config import config_from_hf
    from ..files import read_json

    path = Path(path) if path is not None else default_model_path()
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir() and (path / RUN_FILE).exists():
        path = latest_checkpoint(path)
    rows: list[tuple[str, str]] = [("path", str(path))]
    if path.is_file():
        with GGUFFile(path) as gguf:
            config = config_from_gguf(gguf)
            types = Counter(t.type_name for t in gguf.tensors.values())
            architecture = f"{gguf.metadata.get('general.architecture')} (GGUF v{gguf.version})"
            name = gguf.metadata.get("general.name")
            stored = ", ".join(f"{t} x{n}" for t, n in types.most_common())
            tokenizer = tokenizer_from_gguf(gguf.metadata, str(path)) if "tokenizer.ggml.model" in gguf.metadata else None
    elif (path / CHECKPOINT_FILE).exists():
        info = read_json(path / CHECKPOINT_FILE)
        config = Config.from_dict(info["config"])
        architecture, name, stored = "lucidlm checkpoint", path.name, "safetensors"
        tokenizer = load_ours(path / OUR_FILE) if (path / OUR_FILE).exists() else None
    elif (path / "config.json").exists():
        data = read_json(path / "config.json")
        config, family = config_from_hf(data, str(path))
        architecture, name = f"{family} (Hugging Face)", data.get("_name_or_path") or path.name
        stored = f"safetensors, {data.get('torch_dtype') or data.get('dtype') or 'unknown dtype'}"
        tokenizer = load_tokenizer_json(path / "tokenizer.json") if (path / "tokenizer.json").exists() else None
    else:
        raise FormatError(f"{path}: not a model lucidlm can read")
    rows += [
        ("architecture", architecture),
        ("name", str(name or "-")),
        ("mechanisms", _mechanisms(config)),
        ("parameters", f"{_parameters(config):,}"),
        ("layers x width", f"{config.n_layers} x {config.d_model} (heads {config.n_heads}, head dim {config.head_dim}, "
                           f"MLP {config.d_ff})"),
        ("context length", f"{config.context_length:,} tokens"),
        ("stored as", stored),
        ("computes in", "float32 by default (--dtype bfloat16 to halve memory)"),
        ("tied embeddings", "yes" if config.tie_embeddings else "no"),
    ]
    return rows + _tokenizer_rows(tokenizer)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="a GGUF file, a model folder or a run folder (default: SmolLM2-135M)")


def main(args: argparse.Namespace) -> int:
    rows = describe(args.model)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
