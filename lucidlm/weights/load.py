"""load(): any model file or folder to (model, tokenizer), and the default model.

Accepted: whatever `open_source` accepts (a GGUF file, a Hugging Face folder, our checkpoint, a
training run, a hub id). The model is built on the meta device and adopts the loaded tensors, so
no memory is spent on a random init; every linear layer is built by `make_linear`, the one swap
point for other kinds of layers.
"""

from __future__ import annotations

import os

import torch

from ..default_model import default_model_path
from ..errors import LucidError
from ..model import Linear, Transformer, make_linear
from .name_tables import NameTable, Row
from .sources import Source, open_source
from .translate import to_ours

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


def build_model(source: Source, dtype: torch.dtype, device: torch.device | str | None) -> Transformer:
    """A model holding the source's weights, translated by its name table, in `dtype` on `device`."""
    config, origin = source.config, str(source.path)
    names = source.names
    model = source.meta_model()
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    table = source.table or NameTable("lucidlm", tuple(Row(name, name) for name in expected))
    device = torch.device(device) if device is not None else torch.device("cpu")
    adopter = Adopter(model)
    for name, tensor in to_ours(table, config, names, lambda n: source.read(n).to(device), expected, dtype, origin):
        adopter.take(name, tensor)
    for module in model.modules():  # position tables are built lazily; the anchor takes dtype and device
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                setattr(module, name, torch.empty(0, device=device, dtype=dtype))
    return model.eval()


class Adopter:
    """Moves checked tensors (standard layout, our names) into a model built on the meta device, one
    at a time as the loader translates them, so at most one extra copy is alive at a time. Each
    linear layer is built by `make_linear` once its weight and bias have arrived."""

    def __init__(self, model: Transformer) -> None:
        self.model = model
        self.linear = {path: module.bias is not None for path, module in model.named_modules()
                       if isinstance(module, Linear)}  # path -> has a bias
        self.waiting: dict[str, dict[str, torch.Tensor]] = {}  # a linear layer's parts so far

    def take(self, name: str, tensor: torch.Tensor) -> None:
        path, _, key = name.rpartition(".")
        if path in self.linear:
            parts = self.waiting.setdefault(path, {})
            parts[key] = tensor
            if "weight" in parts and ("bias" in parts or not self.linear[path]):
                del self.waiting[path]
                self.model.set_submodule(path, make_linear(parts["weight"], parts.get("bias")))
        else:
            module = self.model.get_submodule(path) if path else self.model
            module.load_state_dict({key: tensor}, strict=False, assign=True)


def load(path: str | os.PathLike | None = None, dtype: torch.dtype | str | None = torch.float32,
         device: torch.device | str | None = None):
    """Load a model and its tokenizer: (model, tokenizer). tokenizer is None when the source has none."""
    dtype = resolve_dtype(dtype)
    with open_source(path if path is not None else default_model_path()) as source:
        model = build_model(source, dtype, device)
        tokenizer = source.tokenizer()
    model.source = str(source.path)
    model.tokenizer = tokenizer  # for model.encode(texts), sentence-transformers' way
    return model, tokenizer
