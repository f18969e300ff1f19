"""The Auto classes: `AutoModelForCausalLM.from_pretrained(PATH, ...)` and its siblings, each a
lucidlm.load() that checks the model has the head its class promises and wraps it in an HFModel.

transformers' loading arguments are taken for what they mean here: torch_dtype / dtype ("auto":
the dtype the checkpoint says, float32 for GGUF files, whose numbers transformers also
dequantizes to float32), device_map ("cpu", "cuda", "auto"), attn_implementation ("eager": the
plain softmax path; "sdpa": the fused kernel). trust_remote_code and the hub's cache and auth
arguments change nothing: lucidlm never runs a model's own code. An argument lucidlm does not
know is refused by name, so nothing silently changes the numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import LucidError
from ..model.heads import with_classifier_head
from ..weights import load
from ..weights.load import DTYPES
from .model import HFModel
from .paths import model_path

# Arguments transformers' from_pretrained takes that do not change what lucidlm computes.
HARMLESS = ("trust_remote_code", "cache_dir", "token", "local_files_only", "low_cpu_mem_usage",
            "force_download", "use_safetensors", "resume_download", "proxies")
ATTENTION = {"eager": False, "sdpa": True, None: True}  # -> the fused kernel or not


def resolve_dtype(dtype: Any, where: str) -> torch.dtype:
    """transformers' dtype argument -> the compute dtype lucidlm loads in."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return _checkpoint_dtype(Path(where))
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise LucidError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)}, or a torch.dtype)")


def _checkpoint_dtype(path: Path) -> torch.dtype:
    """What config.json says the weights are (torch_dtype / dtype); float32 otherwise (GGUF files,
    our checkpoints, folders that say nothing)."""
    file = path / "config.json" if path.is_dir() else None
    if file is None or not file.is_file():
        return torch.float32
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return torch.float32
    named = data.get("dtype") or data.get("torch_dtype") if isinstance(data, dict) else None
    return DTYPES.get(str(named).removeprefix("torch."), torch.float32)


def resolve_device(device_map: Any) -> str:
    if device_map in (None, "cpu"):
        return "cpu"
    if device_map == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device_map, (str, torch.device, int)):
        device = torch.device(device_map if not isinstance(device_map, int) else f"cuda:{device_map}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise LucidError("device_map asks for CUDA, but torch sees no CUDA device")
        return str(device)
    raise LucidError("device_map takes 'cpu', 'cuda', 'auto' or a device: lucidlm does not split a model "
                     "across devices")


class AutoModelBase:
    """from_pretrained for one task; subclasses say which task and which models have its head."""

    task = "base"

    def __init__(self) -> None:
        raise LucidError(f"{type(self).__name__} is not built directly: use {type(self).__name__}.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *args: Any, torch_dtype: Any = None, dtype: Any = None,
                        device_map: Any = None, attn_implementation: str | None = None,
                        gguf_file: str | None = None, subfolder: str | None = None, revision: str | None = None,
                        num_labels: int | None = None, id2label: dict | None = None, label2id: dict | None = None,
                        ignore_mismatched_sizes: bool = False, **kwargs: Any) -> HFModel:
        unknown = sorted(set(kwargs) - set(HARMLESS))
        if args or unknown:
            raise LucidError(f"unsupported from_pretrained argument(s): {', '.join(unknown) or 'positional ones'}")
        if attn_implementation not in ATTENTION:
            raise LucidError(f"attn_implementation={attn_implementation!r}: lucidlm has 'eager' and 'sdpa'")
        where = model_path(path, gguf_file, subfolder, revision)
        compute = resolve_dtype(dtype if dtype is not None else torch_dtype, where)
        transformer, tokenizer = load(where, dtype=compute, device=resolve_device(device_map))
        transformer = cls.adapt(transformer, num_labels=num_labels, id2label=id2label,
                                ignore_mismatched_sizes=ignore_mismatched_sizes)
        transformer.set_fused_attention(ATTENTION[attn_implementation])
        folder = Path(transformer.source)
        return HFModel(transformer, cls.task, tokenizer, folder if folder.is_dir() else None, str(path)).eval()

    @classmethod
    def adapt(cls, transformer, **options: Any):
        """The loaded model, checked (or changed) to have this class's head."""
        return transformer


class AutoModel(AutoModelBase):
    """The backbone's hidden states: outputs.last_hidden_state (B, T, C), pooler_output where the
    model has a pooler."""

    task = "base"


class AutoModelForTextEncoding(AutoModelBase):
    """An encoder's hidden states (an encoder-decoder's encoder): outputs.last_hidden_state."""

    task = "text-encoding"


class AutoModelForCausalLM(AutoModelBase):
    task = "causal-lm"

    @classmethod
    def adapt(cls, transformer, **options: Any):
        config = transformer.config
        if config.is_encoder_decoder or not config.causal or config.head != "lm":
            raise LucidError(f"{transformer.source} is not a causal language model "
                             f"(use {_suggest(config)})")
        return transformer


class AutoModelForMaskedLM(AutoModelBase):
    task = "masked-lm"

    @classmethod
    def adapt(cls, transformer, **options: Any):
        if transformer.config.head != "mlm":
            raise LucidError(f"{transformer.source} has no masked-LM head (use {_suggest(transformer.config)})")
        return transformer


class AutoModelForSeq2SeqLM(AutoModelBase):
    task = "seq2seq-lm"

    @classmethod
    def adapt(cls, transformer, **options: Any):
        if not transformer.config.is_encoder_decoder:
            raise LucidError(f"{transformer.source} is not an encoder-decoder (use {_suggest(transformer.config)})")
        return transformer


class AutoModelForSequenceClassification(AutoModelBase):
    """A classifier: outputs.logits (B, num_labels). A model saved without one gets a new head,
    initialised at random, as in transformers (train it with `lucidlm finetune-classifier`)."""

    task = "sequence-classification"

    @classmethod
    def adapt(cls, transformer, num_labels: int | None = None, id2label: dict | None = None,
              ignore_mismatched_sizes: bool = False, **options: Any):
        labels = {int(k): v for k, v in id2label.items()} if id2label else None
        wanted = num_labels or (len(labels) if labels else None)
        if transformer.config.head == "classify":
            if wanted is None or wanted == transformer.config.n_labels:
                if labels:
                    transformer.labels = labels
                return transformer
            if not ignore_mismatched_sizes:  # as transformers: a trained head is not thrown away unasked
                raise LucidError(f"{transformer.source} classifies into {transformer.config.n_labels} labels, not "
                                 f"{wanted}: pass ignore_mismatched_sizes=True for a new, untrained head")
        return with_classifier_head(transformer, wanted or 2, labels)


def _suggest(config) -> str:
    if config.is_encoder_decoder:
        return "AutoModelForSeq2SeqLM"
    if config.head == "mlm":
        return "AutoModelForMaskedLM"
    if config.head == "classify":
        return "AutoModelForSequenceClassification"
    if not config.causal:
        return "AutoModel"
    return "AutoModelForCausalLM"
