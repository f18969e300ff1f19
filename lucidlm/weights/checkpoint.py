"""Our checkpoint format: model.safetensors (our tensor names), lucidlm.json (the Config and
generation ids) and the tokenizer in our format, all in one folder.

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

from ..config import Config
from ..errors import FormatError
from ..files import read_json

CHECKPOINT_FILE = "lucidlm.json"
RUN_FILE = "run.json"  # marks a training run folder (see lucidlm.train)
FORMAT = "lucidlm.model"
VERSION = 1


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
    return {name: t.detach().contiguous() for name, t in model.state_dict().items()}


def write_checkpoint(model, tokenizer, folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Write into an existing (temporary) folder."""
    from safetensors.torch import save_file

    save_file({k: v.cpu() for k, v in model_state(model).items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    eos = sorted(tokenizer.eos_token_ids) if tokenizer is not None else []
    info = {"format": FORMAT, "version": VERSION, "config": model.config.to_dict(), "eos_token_ids": eos,
            **(extra or {})}
    (folder / CHECKPOINT_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    if tokenizer is not None:
        tokenizer.save(folder)


def save(model, tokenizer, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Save a model (and tokenizer) in our format; load() reads it back."""
    with atomic_folder(directory) as tmp:
        write_checkpoint(model, tokenizer, tmp, extra)
    return Path(directory)


def load_checkpoint(folder: Path, dtype: torch.dtype = torch.float32, device=None):
    from safetensors import safe_open

    from ..tokenizer.formats import OUR_FILE, load_ours
    from .load import build_model

    info = read_json(folder / CHECKPOINT_FILE)
    if info.get("format") != FORMAT or info.get("version") != VERSION:
        raise FormatError(f"{folder / CHECKPOINT_FILE}: not a lucidlm checkpoint of version {VERSION}")
    config = Config.from_dict(info.get("config") or {})
    weights = folder / "model.safetensors"
    if not weights.exists():
        raise FormatError(f"{folder}: model.safetensors is missing")
    try:
        handle = safe_open(str(weights), framework="pt")
    except Exception as exc:
        raise FormatError(f"{weights}: corrupt or truncated safetensors file ({exc})") from None
    with handle:
        model = build_model(config, None, list(handle.keys()), handle.get_tensor, dtype, device, str(folder))
    tokenizer = load_ours(folder / OUR_FILE) if (folder / OUR_FILE).exists() else None
    if tokenizer is not None:
        tokenizer.add_eos_token_ids(info.get("eos_token_ids", []))
    model.source = str(folder)
    return model, tokenizer


def latest_checkpoint(run_folder: Path) -> Path:
    """The checkpoint a run folder points to: its best one if it has one, else its latest."""
    run = read_json(run_folder / RUN_FILE)
    for key in ("best", "latest"):
        if run.get(key) and (run_folder / run[key] / CHECKPOINT_FILE).exists():
            return run_folder / run[key]
    raise FormatError(f"{run_folder}: this training run has no checkpoint yet")
