"""Hugging Face model folders: config.json, single or sharded *.safetensors, tokenizer and
generation settings. Pickled *.bin weights are refused: loading them could run arbitrary code."""

from __future__ import annotations

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

