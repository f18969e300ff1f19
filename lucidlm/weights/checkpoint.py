"""Our checkpoint format: model.safetensors (our tensor names, the standard (out, in) layout),
lucidlm.json (the Config and generation ids) and the tokenizer in our format, all in one folder.
weights/sources.py reads it back (version 1, from lucidlm 0.1, too).

Folders are written whole or not at all: everything goes into a temporary sibling folder that is
renamed into place at the end, so a crash mid-save leaves the previous folder intact.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save_file

from ..errors import LucidError
from ..locate import CHECKPOINT_FILE
from ..model.lora import lora_layers
from .adapters import write_adapter

FORMAT = "lucidlm.model"
VERSION = 2


@contextmanager
def atomic_folder(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `directory`, on failure it is removed."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def model_state(model) -> dict[str, torch.Tensor]:
    """The model's tensors under our standard names. A model with LoRA adapters gives its weights
    with the adapters folded in (the model itself is untouched), so an export or a quantized file
    holds the fine-tuned model."""
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items() if ".lora_" not in name}
    for path, layer in lora_layers(model).items():
        del state[f"{path}.base.weight"]
        state[f"{path}.weight"] = layer.folded_weight().contiguous()
        if f"{path}.base.bias" in state:
            state[f"{path}.bias"] = state.pop(f"{path}.base.bias")
    return state


def write_checkpoint(model, tokenizer, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write into an existing (temporary) folder. A model with LoRA adapters is written as its
    adapters (PEFT's format) and the path of its base model, which loading opens again."""
    if lora_layers(model):
        source = getattr(model, "source", None)  # load() says where the weights came from
        if source is None:
            raise LucidError("this model's adapters are saved beside the path of their base model, and this "
                             "model was not loaded from one: save it merged (merge_lora) instead")
        base = source if not os.path.exists(source) else str(Path(source).resolve())
        write_adapter(model, folder, base)
        extra = {**(extra or {}), "adapter": True}
    else:
        save_file({k: v.cpu() for k, v in model_state(model).items()}, str(folder / "model.safetensors"),
                  metadata={"format": "pt"})
    eos = sorted(tokenizer.eos_token_ids) if tokenizer is not None else []
    info = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "eos_token_ids": eos,
            **(extra or {})}
    labels = getattr(model, "labels", None)  # a classifier's label names, class id -> name (load() sets them)
    if labels and model.config.head == "classify":
        info["labels"] = [str(labels.get(i, f"LABEL_{i}")) for i in range(model.config.n_labels)]
    (folder / CHECKPOINT_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(folder)


def save(model, tokenizer, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save a model (and tokenizer) in our format; load() reads it back."""
    with atomic_folder(directory) as tmp:
        write_checkpoint(model, tokenizer, tmp, extra)
    return Path(directory)
