"""Hugging Face model folders: config.json, single or sharded *.safetensors, tokenizer and
generation settings. Pickled *.bin weights are refused: loading them could run arbitrary code."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from ..errors import FormatError
from ..files import read_json


class SafetensorsSource:
    """All tensors of one model, maybe sharded: `names` and `read(name)`. A context manager."""

    def __init__(self, folder: Path, single: str = "model.safetensors") -> None:
        self.folder = folder
        index = folder / f"{single}.index.json"
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise FormatError(f"{index}: no weight_map")
            self.file_of = {name: folder / file for name, file in weight_map.items()}
        elif (folder / single).exists():
            self.file_of = None
        elif list(folder.glob("*.bin")) or list(folder.glob("*.pt")):
            raise FormatError(f"{folder}: only pickled weights (*.bin/*.pt) found; lucidlm never unpickles. "
                              f"Convert them to safetensors first")
        else:
            raise FormatError(f"{folder}: no {single} (or its index) found")
        self._stack = ExitStack()
        self._handles: dict[Path, Any] = {}
        self.names: list[str] = []
        if self.file_of is None:
            self.names = list(self._open(folder / single).keys())
            self.file_of = {name: folder / single for name in self.names}
        else:
            for file in sorted(set(self.file_of.values())):
                present = set(self._open(file).keys())
                lost = [n for n, f in self.file_of.items() if f == file and n not in present]
                if lost:
                    raise FormatError(f"{file}: the index lists {lost[0]}, which the shard does not hold")
            self.names = list(self.file_of)

    def _open(self, file: Path):
        if file not in self._handles:
            from safetensors import safe_open

            if not file.exists():
                raise FormatError(f"{file}: shard listed in the index is missing")
            try:
                self._handles[file] = self._stack.enter_context(safe_open(str(file), framework="pt"))
            except Exception as exc:  # safetensors raises its own error type for every corruption
                raise FormatError(f"{file}: corrupt or truncated safetensors file ({exc})") from None
        return self._handles[file]

    def read(self, name: str) -> torch.Tensor:
        try:
            return self._open(self.file_of[name]).get_tensor(name)
        except FormatError:
            raise
        except Exception as exc:
            raise FormatError(f"{self.file_of[name]}: cannot read tensor {name} ({exc})") from None

    def __enter__(self) -> "SafetensorsSource":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def eos_ids_from(folder: Path) -> set[int]:
    """End-of-sequence ids named by generation_config.json and config.json."""
    ids: set[int] = set()
    for name in ("generation_config.json", "config.json"):
        if (folder / name).exists():
            value = read_json(folder / name).get("eos_token_id")
            values = value if isinstance(value, list) else [] if value is None else [value]
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
                raise FormatError(f"{folder / name}: eos_token_id must be a token id or a list of them (got {value!r})")
            ids.update(values)
    return ids



def sentence_pooling(folder: Path) -> dict[str, Any]:
    """A sentence-transformers folder's pooling (1_Pooling/config.json) and whether modules.json
    ends in Normalize, as Config fields; {} for a plain model folder."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return {}
    modules = read_json_list(modules_file)
    out: dict[str, Any] = {}
    for module in modules:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if kind.endswith(".Pooling"):
            pooling = read_json(folder / str(module.get("path", "")) / "config.json")
            keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                    "max": "pooling_mode_max_tokens"}  # sentence-transformers' own spellings
            modes = [mode for mode, key in keys.items() if pooling.get(key)]
            if len(modes) != 1 or pooling.get("pooling_mode_mean_sqrt_len_tokens"):
                raise FormatError(f"{folder}: pooling {pooling} is not one of cls, mean, max")
            out["pooling"] = modes[0]
        elif kind.endswith(".Normalize"):
            out["normalize_pooled"] = True
        elif kind and not kind.endswith(".Transformer"):
            raise FormatError(f"{folder}: sentence-transformers module {kind} is not supported")
    return out


def max_seq_length(folder: Path) -> int | None:
    """sentence_bert_config.json's max_seq_length: where encode() cuts a text."""
    path = folder / "sentence_bert_config.json"
    value = read_json(path).get("max_seq_length") if path.exists() else None
    return value if isinstance(value, int) and value > 0 else None


def read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, list):
        raise FormatError(f"{path}: expected a JSON list")
    return data
