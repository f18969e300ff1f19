"""What is this path? One answer for every reader of files.

`locate(path)` says whether a path is a GGUF file, a Hugging Face model folder, a lucidlm checkpoint,
a training run, or a tokenizer on its own (our JSON file, a tokenizer.json, a tiktoken rank file, or
a folder holding one); a hub id is downloaded first. Model loading (weights/sources.py) and
tokenizer loading (tokenizer/files.py) each keep a table from kind to reader, so a new format is
one rule here and one entry there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import FormatError
from .files import read_json
from .hub import download, looks_like_hub_id

CHECKPOINT_FILE = "lucidlm.json"  # our model checkpoint (weights/checkpoint.py)
RUN_FILE = "run.json"  # a training run folder (train/run_folder.py)
TOKENIZER_FILE = "lucidlm-tokenizer.json"  # our tokenizer (tokenizer/files.py)
HF_CONFIG_FILE = "config.json"
ADAPTER_FILE = "adapter_config.json"  # LoRA adapters in PEFT's format (weights/adapters.py)
HF_TOKENIZER_FILE = "tokenizer.json"

MODEL_KINDS = ("gguf", "hf-folder", "checkpoint", "run", "adapter")
TOKENIZER_KINDS = ("ours", "tokenizer-json", "tiktoken", "vocab-txt")

# A folder is the first of these whose marker file it holds (a run folder also holds our tokenizer;
# an exported Hugging Face folder also holds ours; a LoRA run's checkpoint holds adapters and our
# description).
FOLDER_MARKERS = (("run", RUN_FILE), ("adapter", ADAPTER_FILE), ("checkpoint", CHECKPOINT_FILE),
                  ("hf-folder", HF_CONFIG_FILE))


@dataclass(frozen=True)
class Location:
    kind: str  # one of MODEL_KINDS or TOKENIZER_KINDS
    path: Path  # the folder or file to read

    @property
    def is_model(self) -> bool:
        return self.kind in MODEL_KINDS


def locate(path: str | os.PathLike) -> Location:
    path = Path(path)
    if not path.exists():
        if looks_like_hub_id(str(path)):
            return locate(download(str(path)))
        raise FormatError(f"{path}: no such file or folder")
    if path.is_dir():
        return _locate_folder(path)
    return _locate_file(path)


def adapter_base(folder: Path) -> str:
    """The base model of a LoRA adapter folder, as its adapter_config.json names it: a path
    (absolute, or relative to the working folder or to the adapter's folder) or a hub id."""
    base = read_json(folder / ADAPTER_FILE).get("base_model_name_or_path")
    if not isinstance(base, str) or not base:
        raise FormatError(f"{folder / ADAPTER_FILE}: base_model_name_or_path does not say which model the "
                          f"adapter belongs to")
    if not os.path.exists(base) and (folder / base).exists():
        return str(folder / base)
    return base


def _locate_folder(folder: Path) -> Location:
    for kind, marker in FOLDER_MARKERS:
        if (folder / marker).exists():
            return Location(kind, folder)
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) == 1:
        return Location("gguf", ggufs[0])
    if (folder / TOKENIZER_FILE).exists():
        return Location("ours", folder / TOKENIZER_FILE)
    if (folder / HF_TOKENIZER_FILE).exists():
        return Location("tokenizer-json", folder / HF_TOKENIZER_FILE)
    tiktokens = sorted(folder.glob("*.tiktoken"))
    if tiktokens:
        return Location("tiktoken", tiktokens[0])
    if (folder / "vocab.txt").exists():
        return Location("vocab-txt", folder / "vocab.txt")
    raise FormatError(f"{folder}: not a model folder (no {HF_CONFIG_FILE}, {CHECKPOINT_FILE} or single *.gguf) "
                      f"and no tokenizer ({TOKENIZER_FILE}, {HF_TOKENIZER_FILE}, *.tiktoken)")


def _locate_file(path: Path) -> Location:
    if path.name in (RUN_FILE, CHECKPOINT_FILE, HF_CONFIG_FILE):
        return _locate_folder(path.parent)  # a model's own description file stands for its folder
    head = _head(path)
    if path.suffix == ".gguf" or head.startswith(b"GGUF"):
        return Location("gguf", path)
    if path.suffix == ".tiktoken":
        return Location("tiktoken", path)
    if path.name == "vocab.txt":
        return Location("vocab-txt", path)
    if path.suffix == ".json":
        data = read_json(path)
        return Location("ours" if str(data.get("format", "")).startswith("lucidlm.") else "tokenizer-json", path)
    # tiktoken files are also shipped without a suffix (e.g. gpt2.tiktoken copies): sniff one line
    first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").split()
    if len(first) == 2 and first[1].isdigit():
        return Location("tiktoken", path)
    raise FormatError(f"{path}: not a model lucidlm can load (a GGUF file or a model folder), nor a tokenizer "
                      f"file (tokenizer.json, *.tiktoken, {TOKENIZER_FILE})")


def _head(path: Path, size: int = 200) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
