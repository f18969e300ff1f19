"""load(): any model file or folder to (model, tokenizer), and the default model.

Accepted: whatever `open_source` accepts (a GGUF file, a Hugging Face folder, our checkpoint, a
training run, a hub id). The model is built on the meta device and adopts the loaded tensors, so
no memory is spent on a random init; every linear layer is built by `make_linear`, the one swap
point for other kinds of layers. dtype "auto" (the default) keeps a GGUF file's quantized
matrices quantized in memory on the CPU (lucidlm/model/quant.py) and computes in float32.
"""

from __future__ import annotations

import os

import torch

from ..default_model import default_model_path
from ..errors import LucidError
from ..gguf_file import return_freed_heap
from ..model import Linear, LMHead, Transformer, make_linear
from ..model.quant import QuantizedEmbedding, QuantizedLinear
from .adapters import apply_adapter
from .name_tables import NameTable, Row
from .row_blocks import RowBlocks
from .sources import Source, open_source
from .translate import to_ours

AUTO = "auto"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """The compute dtype; "auto" (quantized matrices kept as they are) computes in float32."""
    if dtype is None or dtype == AUTO:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LucidError(f"unknown dtype {dtype!r} (choose from {AUTO}, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def build_model(source: Source, dtype: torch.dtype, device: torch.device | str | None,
                quantized: bool = False) -> Transformer:
    """A model holding the source's weights, translated by its name table, in `dtype` on `device`;
    with `quantized`, a file's quantized matrices stay quantized (the CPU kernels need the CPU)."""
    config, origin = source.config, str(source.path)
    names = source.names
    model = source.meta_model()
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    table = source.table or NameTable("lucidlm", tuple(Row(name, name) for name in expected))
    device = torch.device(device) if device is not None else torch.device("cpu")
    quantized = quantized and device.type == "cpu"
    read = source.read_quantized if quantized else (lambda n: source.read(n).to(device))
    adopter = Adopter(model, dtype)
    for name, tensor in to_ours(table, config, names, read, expected, dtype, origin):
        adopter.take(name, tensor)
    return_freed_heap()  # once: a trim per tensor cost 0.14 s of SmolLM2's load
    for module in model.modules():  # position tables are built lazily; the anchor takes dtype and device
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer.is_meta:
                setattr(module, name, torch.empty(0, device=device, dtype=dtype))
    return model.eval()


class Adopter:
    """Moves checked tensors (standard layout, our names) into a model built on the meta device, one
    at a time as the loader translates them, so at most one extra copy is alive at a time. Each
    linear layer is built by `make_linear` once its weight and bias have arrived."""

    def __init__(self, model: Transformer, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype
        self.linear = {path: module.bias is not None for path, module in model.named_modules()
                       if isinstance(module, Linear)}  # path -> has a bias
        self.waiting: dict[str, dict[str, torch.Tensor]] = {}  # a linear layer's parts so far

    def take(self, name: str, tensor: torch.Tensor | RowBlocks) -> None:
        path, _, key = name.rpartition(".")
        if isinstance(tensor, RowBlocks):
            if path in self.linear:
                tensor = tensor.matrix()  # make_linear builds a quantized layer from it
            elif self.take_table(name, tensor):
                return
            else:
                tensor = tensor.dequantize().to(self.dtype)  # a matrix no quantized module holds
        if path in self.linear:
            parts = self.waiting.setdefault(path, {})
            parts[key] = tensor
            if "weight" in parts and ("bias" in parts or not self.linear[path]):
                del self.waiting[path]
                self.model.set_submodule(path, make_linear(parts["weight"], parts.get("bias")))
        else:
            module = self.model.get_submodule(path) if path else self.model
            module.load_state_dict({key: tensor}, strict=False, assign=True)

    def take_table(self, name: str, blocks: RowBlocks) -> bool:
        """The token embedding (and the LM head tied to it) or an untied head, held quantized.
        False where the model needs the numbers elsewhere: an encoder or a masked-LM head shares
        the embedding, a head with a bias is built whole."""
        model = self.model
        plain_head = isinstance(model.lm_head, LMHead)
        if name == "tok_emb.weight" and model.encoder is None and (model.lm_head is None or plain_head):
            model.tok_emb = QuantizedEmbedding(blocks.matrix(), self.dtype)
            if plain_head and model.lm_head.tied_to is not None:
                model.lm_head.__dict__["tied_to"] = model.tok_emb
            return True
        if (name == "lm_head.weight" and plain_head and model.lm_head.tied_to is None and model.lm_head.bias is None
                and model.lm_head.softcap is None):  # a capped head is built whole, its cap with it
            model.lm_head = QuantizedLinear(blocks.matrix(), None)
            return True
        return False


def load(path: str | os.PathLike | None = None, dtype: torch.dtype | str | None = AUTO,
         device: torch.device | str | None = None):
    """Load a model and its tokenizer: (model, tokenizer). tokenizer is None when the source has none.
    dtype: "auto" (a GGUF file's quantized matrices stay quantized, the rest computes in float32),
    or a compute dtype for every weight ("float32", "bfloat16", "float16" or a torch.dtype)."""
    quantized = dtype == AUTO
    dtype = resolve_dtype(dtype)
    with open_source(path if path is not None else default_model_path()) as source:
        model = build_model(source, dtype, device, quantized)
        tokenizer = source.tokenizer()
        adapter = source.path if source.kind == "adapter" else None
        if adapter is not None:
            apply_adapter(model, adapter)
    model.source = str(source.base.path if adapter is not None else source.path)  # where the weights came from
    model.adapter = str(adapter) if adapter is not None else None
    model.tokenizer = tokenizer  # for model.encode(texts), sentence-transformers' way
    model.labels = source.labels  # a classifier's label names (class id -> name), or None
    return model, tokenizer
