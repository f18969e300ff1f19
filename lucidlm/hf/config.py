"""AutoConfig and HFConfig: a model's settings under transformers' names (`config.hidden_size`,
`config.num_hidden_layers`, `config.id2label`), with lucidlm's own Config beside them (`config.lucid`).

A Hugging Face folder's config.json is read as it is; for a GGUF file or one of our checkpoints the
names come from the Hugging Face family that computes the same thing (the export mapping), or, for
a model no family matches, from lucidlm's own field names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import FormatError, LucidError
from ..weights import open_source
from ..weights.hf_config import hf_config_from, hf_family
from .outputs import AttributeDict
from .paths import model_path

# What transformers' GenerationConfig starts from where a model says nothing.
GENERATION_DEFAULTS = dict(max_length=20, do_sample=False, num_beams=1, temperature=1.0, top_k=50, top_p=1.0,
                           repetition_penalty=1.0, length_penalty=1.0, early_stopping=False,
                           num_return_sequences=1, eos_token_id=None, pad_token_id=None, bos_token_id=None,
                           decoder_start_token_id=None, forced_eos_token_id=None, max_new_tokens=None)


class HFConfig(AttributeDict):
    """config.json's fields as attributes; `lucid` is the Config lucidlm runs."""

    @property
    def lucid(self) -> Config:
        return self["_lucid"]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"HFConfig({json.dumps(self.to_dict(), indent=2, default=str)})"


def hf_config(config: Config, folder: Path | None, labels: dict[int, str] | None = None) -> HFConfig:
    """transformers' view of `config`: the folder's config.json where there is one, else the
    export mapping's, else our own fields; id2label/label2id for a classifier."""
    data: dict[str, Any] | None = None
    if folder is not None and (folder / "config.json").is_file():
        try:
            data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
    if not isinstance(data, dict):
        try:
            data = hf_config_from(config, hf_family(config))
        except FormatError:  # no Hugging Face family computes this: our own names
            data = {"model_type": "lucidlm", **config.to_dict()}
    if config.head == "classify":
        names = labels or {int(k): v for k, v in (data.get("id2label") or {}).items()}
        names = {i: names.get(i, f"LABEL_{i}") for i in range(config.n_labels)}
        data.update(id2label=names, label2id={v: k for k, v in names.items()}, num_labels=config.n_labels)
    out = HFConfig(data)
    out["_lucid"] = config
    return out


def generation_defaults(folder: Path | None, config: HFConfig, tokenizer=None) -> tuple[AttributeDict, set[str]]:
    """transformers' GenerationConfig for this model: generation_config.json over the defaults,
    with the config's (or else the tokenizer's) special token ids; and the keys the file set."""
    out = dict(GENERATION_DEFAULTS)
    for key in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_eos_token_id"):
        if config.get(key) is not None:
            out[key] = config[key]
    for key in ("eos_token_id", "pad_token_id"):
        if out[key] is None and tokenizer is not None and getattr(tokenizer, key, None) is not None:
            out[key] = getattr(tokenizer, key)
    if config.lucid.decoder_start_token_id is not None:
        out["decoder_start_token_id"] = config.lucid.decoder_start_token_id
    file = folder / "generation_config.json" if folder is not None else None
    saved: dict[str, Any] = {}
    if file is not None and file.is_file():
        try:
            saved = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        saved = {k: v for k, v in saved.items() if k in GENERATION_DEFAULTS} if isinstance(saved, dict) else {}
        out.update(saved)
    return AttributeDict(out), set(saved)


def model_folder(path: str) -> Path | None:
    """The folder a model's config.json and generation_config.json would sit in."""
    p = Path(path)
    return p if p.is_dir() else None


class AutoConfig:
    """transformers' AutoConfig: `from_pretrained(path_or_id)` -> an HFConfig, no weights read."""

    def __init__(self) -> None:
        raise LucidError("AutoConfig is not built directly: use AutoConfig.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, gguf_file: str | None = None, subfolder: str | None = None,
                        revision: str | None = None, trust_remote_code: bool = False, **overrides: Any) -> HFConfig:
        """The model's config; other keyword arguments override its fields (num_labels=5), as in
        transformers. They describe: the model a from_pretrained loads follows its own files."""
        where = model_path(path, gguf_file, subfolder, revision)
        with open_source(where) as source:
            config = hf_config(source.config, model_folder(str(source.path)))
        config.update(overrides)
        return config
