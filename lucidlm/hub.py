"""Hugging Face hub ids ("org/name", or "org/name/file.gguf") through huggingface_hub and its
local cache. Downloads only what loading needs: configs, tokenizer files and safetensors."""

from __future__ import annotations

import re
from pathlib import Path

from .errors import LucidError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w.-]+\.gguf)?$")
ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.tiktoken"]


def looks_like_hub_id(text: str) -> bool:
    return bool(HUB_ID.match(text)) and not Path(text).exists()


def download(hub_id: str) -> Path:
    """A local path for a hub id (a snapshot folder, or one GGUF file)."""
    try:
        import huggingface_hub
    except ImportError:
        raise LucidError("loading from the hub needs huggingface_hub: pip install huggingface_hub") from None
    parts = hub_id.split("/")
    try:
        if len(parts) == 3:
            return Path(huggingface_hub.hf_hub_download("/".join(parts[:2]), parts[2]))
        return Path(huggingface_hub.snapshot_download(hub_id, allow_patterns=ALLOW))
    except Exception as exc:  # network, auth, missing repo: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LucidError(f"cannot get {hub_id!r} from the Hugging Face hub: {first}") from None
