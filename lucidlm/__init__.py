"""lucidlm: a readable transformer language-model stack.

    model, tokenizer = lucidlm.load()            # the default model, or a GGUF / HF folder / hub id
    logits = model(input_ids)                     # (B, T, V)
    hidden = model.hidden(input_ids)              # (B, T, C), the backbone's output
    with lucidlm.probe(model, attention=[3]) as p: model(input_ids)   # p.attention[3]: (B, H, T, T)

Importing lucidlm is cheap and has no side effects: the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Config": "lucidlm.config",
    "PRESETS": "lucidlm.config",
    "LucidError": "lucidlm.errors",
    "Tokenizer": "lucidlm.tokenizer",
    "CharTokenizer": "lucidlm.tokenizer",
    "StreamingDetokenizer": "lucidlm.tokenizer",
    "Transformer": "lucidlm.model",
    "probe": "lucidlm.model",
    "KVCache": "lucidlm.model",
    "SlidingKVCache": "lucidlm.model",
    "load": "lucidlm.weights",
    "open_source": "lucidlm.weights",
    "save": "lucidlm.weights",
    "export_hf": "lucidlm.weights",
    "default_model_path": "lucidlm.weights",
    "generate": "lucidlm.generation",
    "stream_generate": "lucidlm.generation",
    "batch_generate": "lucidlm.generation",
    "stream_batch_generate": "lucidlm.generation",
    "GenerationSettings": "lucidlm.generation",
    "make_sampler": "lucidlm.generation",
    "make_logits_processors": "lucidlm.generation",
    # the Hugging Face way (lucidlm/hf/)
    **{name: "lucidlm.hf" for name in (
        "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM",
        "AutoModelForSequenceClassification", "AutoModelForTextEncoding", "AutoTokenizer")},
    "pipeline": "lucidlm.hf.pipelines",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lucidlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
