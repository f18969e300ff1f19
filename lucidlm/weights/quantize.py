"""`lucidlm quantize MODEL --to q8_0|q4_0|q4_1 --out small.gguf`: write a GGUF file that llama.cpp and
lucidlm read, its matrices in a block format.

Per-tensor rules (as llama.cpp's own mixes keep the most sensitive tensors finer): the token
embedding and the output matrix in Q8_0, the other matrices in the chosen type, vectors (norms,
biases) in F32. Matrices whose width is not a multiple of the 32-weight block stay F16. A GGUF
source keeps its metadata (tokenizer, template) and tensor names; a Hugging Face folder or a
lucidlm checkpoint is translated through the same GGUF name table that loads GGUF files.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from ..default_model import default_model_path
from ..errors import LucidError
from ..gguf_file import GGUFFile
from ..tokenizer.files import gguf_tokenizer_metadata
from .checkpoint import model_state
from .gguf_model import GGUF_ARCHITECTURES
from .hf_config import hf_family
from .load import load
from .translate import to_source

TARGETS = ("q8_0", "q4_0", "q4_1", "f16", "f32")
FINE_TENSORS = ("token_embd.weight", "output.weight")  # kept in Q8_0 whatever the target
BLOCK = 32


def tensor_type(name: str, shape: tuple[int, ...], target: str) -> str:
    """The GGML type one tensor is written in."""
    if len(shape) != 2:
        return "F32"
    if shape[-1] % BLOCK:
        return "F16" if target != "f32" else "F32"
    if target in ("f16", "f32"):
        return target.upper()
    return "Q8_0" if name in FINE_TENSORS else target.upper()


def encode_tensor(array: np.ndarray, kind: str):
    """float32 array -> (data, GGMLQuantizationType) for GGUFWriter."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    qtype = GGMLQuantizationType[kind]
    if kind == "F32":
        return np.ascontiguousarray(array, dtype=np.float32), qtype
    if kind == "F16":
        return np.ascontiguousarray(array, dtype=np.float16), qtype
    return quantize(np.ascontiguousarray(array, dtype=np.float32), qtype), qtype


def _gguf_tensors(path: Path):
    """(metadata, name -> float32 array reader) of a GGUF source, in its own names."""
    gguf = GGUFFile(path)
    return gguf.metadata, list(gguf.tensors), gguf.read, gguf.close


def _model_tensors(path: str | os.PathLike):
    """The same for any other source: loaded in float32, renamed (and llama.cpp's q/k order
    restored) by the GGUF name table of the architecture that computes what it computes."""
    model, tokenizer = load(path, dtype="float32")
    config = model.config
    family = hf_family(config)
    arch = {"mistral": "llama"}.get(family, family)
    if arch not in GGUF_ARCHITECTURES:
        raise LucidError(f"{path}: a {family} model has no GGUF layout here "
                         f"(GGUF architectures: {', '.join(GGUF_ARCHITECTURES)})")
    tensors = to_source(GGUF_ARCHITECTURES[arch][1], config, {k: v.float() for k, v in model_state(model).items()})
    metadata = gguf_metadata(arch, config, tokenizer)
    return metadata, list(tensors), lambda name: tensors[name].numpy(), lambda: None


def gguf_metadata(arch: str, config, tokenizer) -> dict:
    """llama.cpp's metadata keys for a config and its byte-level BPE tokenizer."""
    meta = {"general.architecture": arch, "general.name": "lucidlm",
            f"{arch}.context_length": config.context_length, f"{arch}.embedding_length": config.d_model,
            f"{arch}.block_count": config.n_layers, f"{arch}.feed_forward_length": config.d_ff,
            f"{arch}.attention.head_count": config.n_heads, f"{arch}.attention.head_count_kv": config.n_kv_heads,
            f"{arch}.vocab_size": config.vocab_size}
    if arch == "gpt2":
        meta[f"{arch}.attention.layer_norm_epsilon"] = float(config.norm_eps)
    else:
        meta.update({f"{arch}.attention.layer_norm_rms_epsilon": float(config.norm_eps),
                     f"{arch}.rope.freq_base": float(config.rope_base),
                     f"{arch}.rope.dimension_count": config.head_dim,
                     f"{arch}.attention.key_length": config.head_dim,
                     f"{arch}.attention.value_length": config.head_dim})
        if config.rope_scaling == "linear":
            meta.update({f"{arch}.rope.scaling.type": "linear",
                         f"{arch}.rope.scaling.factor": float(config.rope_scaling_factor)})
    if config.sliding_window is not None:
        if config.sliding_window_layers is not None and len(config.sliding_window_layers) != config.n_layers:
            raise LucidError("a sliding window on some layers only has no GGUF key that says which: "
                             "this model cannot be written as GGUF")
        meta[f"{arch}.attention.sliding_window"] = config.sliding_window
    if tokenizer is not None:
        meta.update(gguf_tokenizer_metadata(tokenizer))  # a tokenizer GGUF cannot hold is a one-line error
    return meta


def _starts_with(path: Path, magic: bytes) -> bool:
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def _add_value(writer, key: str, value) -> None:
    """One metadata entry with the GGUF type its Python value implies (as GGUFWriter.add_key_value)."""
    if key in ("general.alignment", "general.file_type"):
        return  # the writer sets the alignment; the file type would describe the source
    if isinstance(value, list):
        writer.add_array(key, value)  # ints as INT32 (token types), floats as FLOAT32, strings
    elif isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if 0 <= value < 2 ** 32 else writer.add_int64(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    else:
        writer.add_string(key, str(value))


def quantize_model(source: str | os.PathLike | None, out: str | os.PathLike, target: str) -> list[tuple[str, str]]:
    """Write `out`; returns (tensor name, type written) per tensor. `out` appears only when whole."""
    import gguf

    target = target.lower()
    if target not in TARGETS:
        raise LucidError(f"--to must be one of {', '.join(TARGETS)} (got {target!r})")
    path = Path(source) if source is not None else default_model_path()
    out = Path(out)
    if out.suffix.lower() != ".gguf":
        raise LucidError(f"--out {out}: the file name must end in .gguf")
    if out.exists() and out.resolve() == path.resolve():
        raise LucidError(f"--out {out} is the model being read: write a new file")
    is_gguf = path.is_file() and _starts_with(path, b"GGUF")
    metadata, names, read, close = _gguf_tensors(path) if is_gguf else _model_tensors(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    written = []
    try:
        writer = gguf.GGUFWriter(str(tmp), metadata["general.architecture"])
        for key, value in metadata.items():
            if key not in ("general.architecture", "general.quantization_version"):
                _add_value(writer, key, value)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name in names:
            array = read(name)
            kind = tensor_type(name, array.shape, target)
            data, qtype = encode_tensor(array, kind)
            writer.add_tensor(name, data, raw_dtype=qtype)
            written.append((name, kind))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        close()
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="a GGUF file, a Hugging Face folder, a lucidlm checkpoint or run "
                                                 "(default: SmolLM2-135M)")
    parser.add_argument("--to", required=True, help=f"the matrices' type: {', '.join(TARGETS)} (the embedding and "
                                                    "output matrix stay Q8_0; vectors stay F32)")
    parser.add_argument("--out", required=True, help="the GGUF file to write (written whole or not at all)")


def main(args: argparse.Namespace) -> int:
    written = quantize_model(args.model, args.out, args.to)
    counts: dict[str, int] = {}
    for _, kind in written:
        counts[kind] = counts.get(kind, 0) + 1
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {size / 2 ** 20:.1f} MiB, {len(written)} tensors "
          f"({', '.join(f'{k} x{n}' for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))})")
    return 0
