"""Model sources: one class per kind of model on disk, picked by `locate` (lucidlm/locate.py).

A source gives the Config (from the file's own metadata), its tensors under the file's own names,
the name table that translates them to ours (None: they are ours already), its tokenizer and a
description for `lucidlm info`. `load`, `info` and the trainer's resume all go through
`open_source`; a new kind of file is one class and one SOURCES entry.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..errors import FormatError, reading
from ..files import read_json
from ..gguf_file import GGUFFile
from ..locate import ADAPTER_FILE, CHECKPOINT_FILE, HF_CONFIG_FILE, RUN_FILE, Location, adapter_base, locate
from ..model import Transformer
from ..model.quant import NATIVE
from ..tokenizer import tokenizer_from_dict
from ..tokenizer.files import gguf_tokenizer_data, read_tokenizer_data
from .checkpoint import FORMAT, VERSION
from .gguf_model import config_from_gguf, gguf_table
from .hf_config import HF_FAMILIES, config_from_hf, label_names
from .hf_folder import SafetensorsSource, eos_ids_from, max_seq_length, sentence_pooling
from .name_tables import NameTable, Row
from .row_blocks import QUANTIZABLE, RowBlocks
from .translate import count_layers

# Our own names, for counting the layers of our checkpoints.
OUR_LAYERS = NameTable("lucidlm", (Row("blocks.{i}.attn_norm.weight", "blocks.{i}.attn_norm.weight"),
                                   Row("encoder.blocks.{e}.attn_norm.weight", "encoder.blocks.{e}.attn_norm.weight")))


class Source:
    """A model on disk. Use as a context manager: tensors are read lazily from open files."""

    kind = ""
    config: Config
    table: NameTable | None = None
    labels: dict[int, str] | None = None  # a classifier's label names (class id -> name), where the file has them

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def names(self) -> list[str]:
        raise NotImplementedError

    def read(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def read_quantized(self, name: str):
        """For a source whose matrices are quantized: them as RowBlocks. Others hold floats."""
        return self.read(name)

    def tokenizer(self):
        """The tokenizer that came with the model, or None."""
        raise NotImplementedError

    def meta_model(self) -> Transformer:
        """The model this config describes, built on the meta device (no memory): its shapes and
        parameter count. Sizes too large to exist are the file's error."""
        self.check_depth()
        try:
            with torch.device("meta"):
                return Transformer(self.config)
        except (RuntimeError, ValueError, OverflowError, TypeError) as exc:  # torch's ways of saying "too large"
            raise FormatError(f"{self.path}: the config describes tensors too large to exist "
                              f"({str(exc).splitlines()[0]})") from exc

    def check_depth(self) -> None:
        """The config's layer count against the tensors present: a corrupt or lying header must
        not make anyone build (or count the parameters of) a billion layers."""
        for placeholder, said, what in (("{i}", self.config.n_layers, "layers"),
                                         ("{e}", self.config.encoder_layers, "encoder layers")):
            found = count_layers(self.table or OUR_LAYERS, self.names, placeholder)
            if found != said:
                raise FormatError(f"{self.path}: the config says {said} {what}, the tensors describe {found}")

    def describe(self) -> dict[str, str]:
        """architecture, name and how the weights are stored, for `lucidlm info`."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class GGUFSource(Source):
    kind = "gguf"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gguf = GGUFFile(path)
        try:
            self.config = config_from_gguf(self.gguf)
            self.architecture, self.table = gguf_table(self.gguf.metadata, str(path))
        except BaseException:
            self.gguf.close()
            raise

    @property
    def names(self) -> list[str]:
        return list(self.gguf.tensors)

    def read(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.gguf.read(name))

    def read_quantized(self, name: str) -> torch.Tensor | RowBlocks:
        """A quantized matrix as its blocks (re-quantized later if its type is not kept as it is);
        anything else as read()."""
        info = self.gguf.tensors[name]
        if len(info.shape) != 2 or info.type_name not in QUANTIZABLE:
            return self.read(name)
        if info.type_name in NATIVE:
            return RowBlocks.of(torch.from_numpy(self.gguf.read_blocks(name)), info.type_name, info.shape)
        return RowBlocks.of(self.read(name), info.type_name, info.shape)

    def tokenizer(self):
        if "tokenizer.ggml.model" not in self.gguf.metadata:
            return None
        with reading(self.path, "tokenizer metadata"):
            return tokenizer_from_dict(gguf_tokenizer_data(self.gguf.metadata, str(self.path)))

    def describe(self) -> dict[str, str]:
        types = Counter(t.type_name for t in self.gguf.tensors.values())
        return {"architecture": f"{self.architecture} (GGUF v{self.gguf.version})",
                "name": str(self.gguf.metadata.get("general.name") or "-"),
                "stored as": ", ".join(f"{t} x{n}" for t, n in types.most_common())}

    def close(self) -> None:
        self.gguf.close()


class SafetensorsFolder(Source):
    """A folder of safetensors weights, opened on first use (`lucidlm info` never opens them)."""

    _weights: SafetensorsSource | None = None

    @property
    def weights(self) -> SafetensorsSource:
        if self._weights is None:
            self._weights = SafetensorsSource(self.path)
        return self._weights

    @property
    def names(self) -> list[str]:
        return self.weights.names

    def read(self, name: str) -> torch.Tensor:
        return self.weights.read(name)

    def close(self) -> None:
        if self._weights is not None:
            self._weights.__exit__()

    def _tokenizer_with(self, eos_ids):
        data = read_tokenizer_data(Location(self.kind, self.path), required=False)
        if data is None:
            return None
        with reading(self.path, "tokenizer"):
            tokenizer = tokenizer_from_dict(data)
            tokenizer.add_eos_token_ids(eos_ids)
        return tokenizer


class HFFolderSource(SafetensorsFolder):
    kind = "hf-folder"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.data = read_json(path / HF_CONFIG_FILE)
        self.config, self.family = config_from_hf(self.data, str(path))
        family = HF_FAMILIES[self.family]
        self.table = family.table
        changes = {**(family.heads(self.names) if family.heads else {}), **sentence_pooling(path)}
        if changes:
            self.config = self.config.replace(**changes)
        names = label_names(self.data)
        self.labels = names if self.config.head == "classify" and len(names or ()) == self.config.n_labels else None

    def tokenizer(self):
        tokenizer = self._tokenizer_with(eos_ids_from(self.path))
        limit = max_seq_length(self.path)
        if tokenizer is not None and limit is not None and hasattr(tokenizer, "model_max_length"):
            tokenizer.model_max_length = limit  # sentence-transformers cuts texts here, not at the model's context
        return tokenizer

    def describe(self) -> dict[str, str]:
        dtype = self.data.get("torch_dtype") or self.data.get("dtype") or "unknown dtype"
        return {"architecture": f"{self.family} (Hugging Face)",
                "name": str(self.data.get("_name_or_path") or self.path.name), "stored as": f"safetensors, {dtype}"}


# Checkpoints of version 1 stored every matrix of a linear layer, the token embedding and the LM
# head transposed, (in, out); version 2 stores the standard (out, in) of every file format.
VERSION_1_TRANSPOSED = re.compile(r"(tok_emb|lm_head|.*\.(qkv|out|up|down))\.weight")


class CheckpointSource(SafetensorsFolder):
    kind = "checkpoint"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.info = read_json(path / CHECKPOINT_FILE)
        self.version = self.info.get("version")
        if self.info.get("format") != FORMAT or self.version not in (1, VERSION):
            raise FormatError(f"{path / CHECKPOINT_FILE}: not a lucidlm checkpoint of version 1 or {VERSION}")
        self.config = Config.from_dict(self.info.get("config") or {})
        labels = self.info.get("labels")  # a list: the name of class 0, 1, ...
        if labels is not None and (not isinstance(labels, list) or len(labels) != self.config.n_labels
                                   or not all(isinstance(n, str) for n in labels)):
            raise FormatError(f"{path / CHECKPOINT_FILE}: labels must be a list of {self.config.n_labels} names")
        self.labels = dict(enumerate(labels)) if labels is not None else None

    def read(self, name: str) -> torch.Tensor:
        tensor = super().read(name)
        if self.version == 1 and VERSION_1_TRANSPOSED.fullmatch(name) and tensor.dim() == 2:
            return tensor.t()
        return tensor

    def tokenizer(self):
        eos = self.info.get("eos_token_ids", [])
        if not isinstance(eos, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in eos):
            raise FormatError(f"{self.path / CHECKPOINT_FILE}: eos_token_ids must be a list of token ids")
        return self._tokenizer_with(eos)

    def describe(self) -> dict[str, str]:
        return {"architecture": "lucidlm checkpoint", "name": self.path.name, "stored as": "safetensors"}


class AdapterSource(Source):
    """LoRA adapters (PEFT's folder, or a LoRA run's checkpoint) over their base model. Everything
    but the adapters is the base's; load() adds the adapters to the base it builds."""

    kind = "adapter"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        base = adapter_base(path)
        try:
            self.base = open_source(base)
        except FormatError as exc:
            raise FormatError(f"{path / ADAPTER_FILE} names the base model {base}, which cannot be opened: {exc}"
                              ) from None
        if isinstance(self.base, AdapterSource):
            self.base.close()
            raise FormatError(f"{path}: the adapter's base model is itself an adapter; merge that one first "
                              f"(lucidlm finetune --merge)")
        self.config, self.table, self.labels = self.base.config, self.base.table, self.base.labels

    @property
    def names(self) -> list[str]:
        return self.base.names

    def read(self, name: str) -> torch.Tensor:
        return self.base.read(name)

    def read_quantized(self, name: str):
        return self.base.read_quantized(name)

    def tokenizer(self):
        """The folder's own tokenizer when it has one (a LoRA run saves the one it trained with, which
        --tokenizer may have chosen), else the base model's; with the base's end tokens."""
        base = self.base.tokenizer()
        data = read_tokenizer_data(Location("checkpoint", self.path), required=False)  # the folder's own only
        if data is None:
            return base
        with reading(self.path, "tokenizer"):
            tokenizer = tokenizer_from_dict(data)
        tokenizer.add_eos_token_ids(base.eos_token_ids if base is not None else [])
        return tokenizer

    def describe(self) -> dict[str, str]:
        base = self.base.describe()
        return {**base, "architecture": f"{base['architecture']} + LoRA adapters",
                "name": f"{self.path.name} (adapters on {base['name']})"}

    def close(self) -> None:
        self.base.close()


def checkpoints_on_disk(run_folder: Path) -> list[Path]:
    """A run's checkpoint folders that hold a model, oldest first."""
    folder = run_folder / "checkpoints"
    return sorted(p for p in folder.glob("step-*") if (p / CHECKPOINT_FILE).exists()) if folder.is_dir() else []


def latest_checkpoint(run_folder: Path) -> Path:
    """The checkpoint a run folder points to: its best one if it has one, else its latest; when
    run.json is behind the disk (a kill between writes), the newest checkpoint there."""
    run = read_json(run_folder / RUN_FILE)
    for key in ("best", "latest"):
        if isinstance(run.get(key), str) and (run_folder / run[key] / CHECKPOINT_FILE).exists():
            return run_folder / run[key]
    found = checkpoints_on_disk(run_folder)
    if not found:
        raise FormatError(f"{run_folder}: this training run has no checkpoint yet")
    return found[-1]


SOURCES: dict[str, Any] = {
    "gguf": GGUFSource,
    "hf-folder": HFFolderSource,
    "checkpoint": CheckpointSource,
    "run": lambda folder: open_source(latest_checkpoint(folder)),  # a LoRA run's checkpoints are adapters
    "adapter": AdapterSource,
}


def open_source(path: str | os.PathLike) -> Source:
    """The model at `path`: a GGUF file, a Hugging Face folder, a checkpoint, a run, or a hub id."""
    location = locate(path)
    if not location.is_model:
        raise FormatError(f"{path}: this is a tokenizer, not a model (a GGUF file or a model folder)")
    with reading(location.path, "model metadata"):
        return SOURCES[location.kind](location.path)
