"""load(): any model file or folder to (model, tokenizer), and the default model.

Accepted: a GGUF file; a Hugging Face folder (config.json + safetensors); our own checkpoint folder
(lucidlm.json); a training run folder (its latest checkpoint); a hub id. The model is built on the
meta device and adopts the loaded tensors, so no memory is spent on a random init.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..config import Config
from ..default_model import default_model_path
from ..errors import FormatError, LucidError
from ..model import Transformer
from .name_tables import NameTable, Row
from .translate import check_finite, count_layers, to_ours

# Our own names, for counting the layers of our checkpoints.
OUR_NAMES = NameTable("lucidlm", (Row("blocks.{i}.attn_norm.weight", "blocks.{i}.attn_norm.weight"),))
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LucidError(f"unknown dtype {dtype!r} (choose from {', '.join(DTYPES)})")
    return DTYPES[dtype]


def build_model(config: Config, table: NameTable | None, names: Iterable[str], read: Callable[[str], torch.Tensor],
                dtype: torch.dtype, device: torch.device | str | None, origin: str) -> Transformer:
    """A model whose weights come from `read(name)` for each source name, translated by `table`
    (None: the names are already ours)."""
    names = list(names)
    # Check the depth against the tensors before building anything: a corrupt or lying header
    # must not make us build a billion layers.
    found = count_layers(table if table is not None else OUR_NAMES, names)
    if found != config.n_layers:
        raise FormatError(f"{origin}: the config says {config.n_layers} layers, the tensors describe {found}")
    with torch.device("meta"):
        model = Transformer(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    target_device = torch.device(device) if device is not None else torch.device("cpu")

    def read_on_device(name: str) -> torch.Tensor:
        return read(name).to(target_device)

    if table is None:
        unexpected = sorted(set(names) - set(expected))
        missing = sorted(set(expected) - set(names))
        if unexpected or missing:
            raise FormatError(f"{origin}: tensors do not match the config"
                              f"{'; missing ' + ', '.join(missing[:6]) if missing else ''}"
                              f"{'; unexpected ' + ', '.join(unexpected[:6]) if unexpected else ''}")
        state = {}
        for name in expected:
            tensor = read_on_device(name).to(dtype)
            check_finite(tensor, name, origin)
            if tuple(tensor.shape) != expected[name]:
                raise FormatError(f"{origin}: tensor {name} has shape {tuple(tensor.shape)}, "
                                  f"the config says {expected[name]}")
            state[name] = tensor
    else:
        state = to_ours(table, config, names, read_on_device, expected, dtype, origin)
    model.load_weights(state)
    return model.eval()


def load(path: str | os.PathLike | None = None, dtype: torch.dtype | str | None = torch.float32,
         device: torch.device | str | None = None):
    """Load a model and its tokenizer: (model, tokenizer). tokenizer is None when the source has none."""
    dtype = resolve_dtype(dtype)
    if path is None:
        path = default_model_path()
    text = str(path)
    from .hub import download, looks_like_hub_id

    if not Path(text).exists():
        if looks_like_hub_id(text):
            path = download(text)
        else:
            raise LucidError(f"{text}: no such file or folder")
    path = Path(path)
    if path.is_dir():
        from .checkpoint import CHECKPOINT_FILE, RUN_FILE, latest_checkpoint, load_checkpoint

        if (path / RUN_FILE).exists():
            path = latest_checkpoint(path)
        if (path / CHECKPOINT_FILE).exists():
            return load_checkpoint(path, dtype, device)
        if (path / "config.json").exists():
            return _load_hf_folder(path, dtype, device)
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return _load_gguf(ggufs[0], dtype, device)
        raise FormatError(f"{path}: not a model folder (no config.json, {CHECKPOINT_FILE} or single *.gguf)")
    if path.suffix == ".gguf" or _has_gguf_magic(path):
        return _load_gguf(path, dtype, device)
    raise FormatError(f"{path}: not a model lucidlm can load (a GGUF file or a model folder)")


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None


def _load_gguf(path: Path, dtype: torch.dtype, device):
    from ..gguf_file import GGUFFile
    from ..tokenizer.formats import tokenizer_from_gguf
    from .gguf_model import config_from_gguf, gguf_table

    with GGUFFile(path) as gguf:
        config = config_from_gguf(gguf)
        _, table = gguf_table(gguf.metadata, str(path))
        model = build_model(config, table, list(gguf.tensors), lambda n: torch.from_numpy(gguf.read(n)),
                            dtype, device, str(path))
        tokenizer = None
        if "tokenizer.ggml.model" in gguf.metadata:
            tokenizer = tokenizer_from_gguf(gguf.metadata, str(path))
    model.source = str(path)
    return model, tokenizer


def _load_hf_folder(folder: Path, dtype: torch.dtype, device):
    from ..tokenizer.formats import load_tokenizer_json
    from .hf_config import config_from_hf
    from ..files import read_json
    from .hf_folder import SafetensorsSource, eos_ids_from
    from .name_tables import HF_GPT2, HF_LLAMA

    config, family = config_from_hf(read_json(folder / "config.json"), str(folder))
    table = HF_GPT2 if family == "gpt2" else HF_LLAMA
    with SafetensorsSource(folder) as source:
        model = build_model(config, table, source.names, source.read, dtype, device, str(folder))
    tokenizer = None
    if (folder / "tokenizer.json").exists():
        tokenizer = load_tokenizer_json(folder / "tokenizer.json")
        tokenizer.add_eos_token_ids(eos_ids_from(folder))
    model.source = str(folder)
    return model, tokenizer
