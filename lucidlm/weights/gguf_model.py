"""GGUF models: Config from the `{arch}.*` metadata keys, tensors through the GGUF name tables.

The architecture key picks a family and a name table; nothing else in lucidlm knows the name.
"""

from __future__ import annotations

from typing import Any

from ..config import FAMILIES, Config
from ..errors import FormatError
from ..gguf_file import GGUFFile
from .name_tables import GGUF_GPT2, GGUF_LLAMA, GGUF_PHI3, GGUF_QWEN2, NameTable

# general.architecture -> (family switches, name table)
GGUF_ARCHITECTURES: dict[str, tuple[str, NameTable]] = {
    "llama": ("llama", GGUF_LLAMA),
    "qwen2": ("qwen2", GGUF_QWEN2),
    "gpt2": ("gpt2", GGUF_GPT2),
    "phi3": ("phi3", GGUF_PHI3),
}


def gguf_table(meta: dict[str, Any], origin: str) -> tuple[str, NameTable]:
    arch = meta.get("general.architecture")
    if arch not in GGUF_ARCHITECTURES:
        raise FormatError(f"{origin}: unsupported architecture {arch!r} "
                          f"(supported: {', '.join(GGUF_ARCHITECTURES)})")
    return arch, GGUF_ARCHITECTURES[arch][1]


def config_from_gguf(gguf: GGUFFile) -> Config:
    meta, origin = gguf.metadata, gguf.path
    arch, _ = gguf_table(meta, origin)
    family = GGUF_ARCHITECTURES[arch][0]

    def get(key: str, default: Any = KeyError) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is KeyError:
            raise FormatError(f"{origin}: metadata lacks {arch}.{key}")
        return value

    d_model, n_heads = get("embedding_length"), get("attention.head_count")
    head_dim = get("attention.key_length", d_model // n_heads if n_heads else 0)
    rope_dim = get("rope.dimension_count", head_dim) if family != "gpt2" else head_dim
    if rope_dim != head_dim and arch == "llama":  # its q/k rows are permuted over the whole head
        raise FormatError(f"{origin}: partial rotary embeddings (rope.dimension_count != head dim) "
                          f"are not supported for llama")
    if "rope_factors_long.weight" in gguf.tensors or "rope_factors_short.weight" in gguf.tensors:
        raise FormatError(f"{origin}: longrope rotary factors (rope_factors_long/short) are not supported in GGUF files")
    scaling = get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise FormatError(f"{origin}: unsupported rope scaling {scaling!r}")
    embedding = gguf.tensors.get("token_embd.weight")
    vocab_size = get("vocab_size", embedding.shape[0] if embedding is not None else None)
    if vocab_size is None:
        raise FormatError(f"{origin}: cannot tell the vocabulary size (no vocab_size, no token_embd.weight)")
    eps_key = "attention.layer_norm_epsilon" if family == "gpt2" else "attention.layer_norm_rms_epsilon"
    switches = dict(FAMILIES[family])
    switches["tie_embeddings"] = "output.weight" not in gguf.tensors
    try:
        return Config(**switches, vocab_size=int(vocab_size), context_length=int(get("context_length")),
                      d_model=int(d_model), n_layers=int(get("block_count")), n_heads=int(n_heads),
                      n_kv_heads=int(get("attention.head_count_kv", n_heads)), head_dim=int(head_dim),
                      d_ff=int(get("feed_forward_length")), norm_eps=float(get(eps_key)),
                      rope_base=float(get("rope.freq_base", 10000.0)),
                      rope_scaling="linear" if scaling == "linear" else "none",
                      rope_scaling_factor=float(get("rope.scaling.factor", 1.0)) if scaling == "linear" else 1.0,
                      sliding_window=get("attention.sliding_window", None),
                      rope_dim=int(rope_dim) if rope_dim != head_dim else None)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{origin}: bad model metadata: {exc}") from None
