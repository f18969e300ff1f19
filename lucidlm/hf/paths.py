"""Where a from_pretrained argument points: a local path, a hub id ("org/name"), or transformers'
folder-plus-`gguf_file` pair (a folder and a file name, or a hub id and a file name)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import LucidError
from ..hub import looks_like_hub_id


def model_path(path: str | os.PathLike, gguf_file: str | None = None, subfolder: str | None = None,
               revision: str | None = None) -> str:
    """What lucidlm.load opens for transformers' (path, gguf_file, subfolder, revision) arguments."""
    if not isinstance(path, (str, os.PathLike)):
        raise LucidError(f"from_pretrained takes a path or a hub id, got {type(path).__name__}")
    if revision not in (None, "main"):
        raise LucidError(f"revision={revision!r}: lucidlm fetches a hub model's main revision only; "
                         f"download that revision and pass its folder")
    path = os.fspath(path)
    if subfolder:
        if not Path(path).is_dir():
            raise LucidError(f"subfolder={subfolder!r} needs a local folder ({path} is not one)")
        path = os.fspath(Path(path) / subfolder)
    if gguf_file is None:
        return path
    if Path(path).is_dir():
        return os.fspath(Path(path) / gguf_file)
    if looks_like_hub_id(path):
        return f"{path.rstrip('/')}/{gguf_file}"  # hub.py fetches that one file
    raise LucidError(f"{path} is not a folder holding {gguf_file}")
