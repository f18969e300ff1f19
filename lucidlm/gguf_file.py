"""Reading GGUF files (llama.cpp's format): metadata, tensor directory, and tensors as float arrays.

The layout follows the GGUF specification (ggml/docs/gguf.md): a header, key/value metadata, a
tensor directory and aligned tensor data. Block formats and dequantisation come from the `gguf`
package (llama.cpp's own Python library). We parse the container ourselves because gguf's
GGUFReader builds a numpy view per array element, about 2.5 s for a 49k-token vocabulary, and
because a parser that checks every offset can turn any corrupt or truncated file into one clear
error.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import FormatError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
UINT32 = 4

# GGUF metadata value types (gguf.GGUFValueType): code -> (struct format, size); 8 and 9 are special.
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
            6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8",
          11: "<i8", 12: "<f8"}
STRING, ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# ggml's tensor types (ggml.h): code -> (name, values per block, bytes per block), as gguf-py's
# GGMLQuantizationType and GGML_QUANT_SIZES say (a test holds them equal). Written out because
# importing gguf took 30-50 ms of the default model's load, which needs only these numbers.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18)}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: the outermost dimension first (GGUF lists ne[0] first)
    type_code: int
    offset: int  # from the start of the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        return quant_type_name(self.type_code)


def quant_type_name(code: int) -> str:
    return GGML_TYPES[code][0] if code in GGML_TYPES else f"type {code}"


_NUMPY_FLOATS = {0: "<f4", 1: "<f2"}  # F32, F16

# The tensor types we dequantize (all through gguf.quants); anything else is a clear error.
SUPPORTED_TYPES = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                   "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; any overrun is a FormatError."""

    def __init__(self, buf, path: str) -> None:
        self.buf, self.pos, self.path, self.size = buf, 0, path, len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise FormatError(f"{self.path}: truncated or corrupt GGUF file (ends inside {what})")

    def scalar(self, fmt: str, size: int, what: str):
        self.need(size, what)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", 8, what)

    def string(self, what: str) -> str:
        n = self.u64(what)
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{self.path}: {what} is not valid UTF-8") from None

    def strings(self, count: int, what: str) -> list[str]:
        """`count` strings: string() inlined, because a vocabulary is 100,000 of them (0.5 s of a
        load as method calls; the item's name is formatted only for an error)."""
        buf, pos, size, length = self.buf, self.pos, self.size, _U64.unpack_from
        out = []
        for i in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"{what}[{i}]")
            n = length(buf, pos)[0]
            pos += 8
            if pos + n > size:
                self.pos = pos
                self.need(n, f"{what}[{i}]")
            try:
                out.append(buf[pos:pos + n].decode("utf-8"))
            except UnicodeDecodeError:
                raise FormatError(f"{self.path}: {what}[{i}] is not valid UTF-8") from None
            pos += n
        self.pos = pos
        return out

    def value(self, type_code: int, what: str) -> Any:
        if type_code in _SCALARS:
            return self.scalar(*_SCALARS[type_code], what)
        if type_code == STRING:
            return self.string(what)
        if type_code == ARRAY:
            item_type = self.u32(what)
            count = self.u64(what)
            if item_type in _SCALARS:
                size = _SCALARS[item_type][1]
                self.need(count * size, what)
                array = np.frombuffer(self.buf, dtype=_NUMPY[item_type], count=count, offset=self.pos)
                self.pos += count * size
                return array.astype(bool).tolist() if item_type == 7 else array.tolist()
            if item_type == STRING:
                self.need(count * 8, what)  # every string has at least its 8-byte length
                return self.strings(count, what)
            if item_type == ARRAY:  # llama.cpp refuses them too; unbounded nesting would exhaust the stack
                raise FormatError(f"{self.path}: {what} is an array of arrays, which GGUF readers do not accept")
            raise FormatError(f"{self.path}: {what} has unknown array item type {item_type}")
        raise FormatError(f"{self.path}: {what} has unknown value type {type_code}")


class GGUFFile:
    """An open GGUF file: `metadata` (dict), `tensors` (name -> TensorInfo), `read(name)`.

    Use it as a context manager; the file is memory-mapped and unmapped on exit.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise FormatError(f"cannot open {self.path}: {exc.strerror}") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size < 24:
                raise FormatError(f"{self.path}: not a GGUF file ({size} bytes, too short for a header)")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        if cur.buf[:4] != MAGIC:
            raise FormatError(f"{self.path}: not a GGUF file (bad magic {bytes(cur.buf[:4])!r})")
        cur.pos = 4
        self.version = cur.u32("the version")
        if self.version not in (2, 3):
            raise FormatError(f"{self.path}: unsupported GGUF version {self.version} (2 and 3 are supported)")
        n_tensors, n_kv = cur.u64("the tensor count"), cur.u64("the metadata count")
        if n_kv > cur.size or n_tensors > cur.size:
            raise FormatError(f"{self.path}: corrupt GGUF header ({n_kv} metadata keys, {n_tensors} tensors)")
        self.metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key #{i}")
            if key in self.metadata:  # the second would win silently: llama.cpp refuses the file
                raise FormatError(f"{self.path}: metadata key {key!r} appears twice")
            type_code = cur.u32(f"the type of {key}")
            if key == "general.alignment" and type_code != UINT32:  # llama.cpp's rule: the layout depends on it
                raise FormatError(f"{self.path}: general.alignment must be a uint32 (its type code is {type_code})")
            self.metadata[key] = cur.value(type_code, key)

        infos = []
        for i in range(n_tensors):
            name = cur.string(f"tensor name #{i}")
            n_dims = cur.u32(f"the rank of {name}")
            if n_dims > MAX_DIMS:
                raise FormatError(f"{self.path}: tensor {name} claims {n_dims} dimensions (at most {MAX_DIMS})")
            dims = [cur.u64(f"the shape of {name}") for _ in range(n_dims)]
            if 0 in dims:
                raise FormatError(f"{self.path}: tensor {name} has an empty dimension {dims}")
            infos.append((name, dims, cur.u32(f"the type of {name}"), cur.u64(f"the offset of {name}")))

        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if alignment <= 0 or alignment & (alignment - 1):
            raise FormatError(f"{self.path}: invalid general.alignment {alignment!r}")
        data_start = -(-cur.pos // alignment) * alignment

        # llama.cpp's rules: each tensor starts exactly where the previous one's data, padded to the
        # alignment, ends; so no two tensors overlap, none is misaligned, and a type change that
        # changes a tensor's size shows. (One that keeps it, F16 to BF16, passes here as in llama.cpp.)
        self.tensors: dict[str, TensorInfo] = {}
        expected_offset = 0
        for name, dims, type_code, offset in infos:
            if name in self.tensors:
                raise FormatError(f"{self.path}: tensor {name} appears twice")
            if type_code not in GGML_TYPES:
                raise FormatError(f"{self.path}: tensor {name} has unknown type code {type_code}")
            _, block_size, type_size = GGML_TYPES[type_code]
            n_elements = math.prod(dims)  # Python ints: a lying shape cannot overflow
            if dims and dims[0] % block_size:
                raise FormatError(f"{self.path}: tensor {name}: row of {dims[0]} values is not a whole "
                                  f"number of {quant_type_name(type_code)} blocks")
            n_bytes = n_elements // block_size * type_size
            if offset != expected_offset:
                raise FormatError(f"{self.path}: tensor {name} has offset {offset}, expected {expected_offset}")
            expected_offset += -(-n_bytes // alignment) * alignment
            start = data_start + offset
            if start + n_bytes > cur.size:
                raise FormatError(f"{self.path}: truncated GGUF file (tensor {name} needs bytes up to "
                                  f"{start + n_bytes}, the file has {cur.size})")
            self.tensors[name] = TensorInfo(name, tuple(int(d) for d in reversed(dims)), type_code, start, n_bytes)

    def read(self, name: str) -> np.ndarray:
        """The tensor as a float32 numpy array of its logical shape (a copy, safe after close)."""
        info = self.tensors[name]
        if info.type_name not in SUPPORTED_TYPES:
            raise FormatError(f"{self.path}: tensor {name} uses {info.type_name}, which lucidlm cannot "
                              f"dequantize (supported: {', '.join(SUPPORTED_TYPES)})")
        if info.type_code in _NUMPY_FLOATS:  # numpy reads these as they are: no gguf import (30-50 ms)
            values = np.frombuffer(self._map, dtype=_NUMPY_FLOATS[info.type_code], count=math.prod(info.shape),
                                   offset=info.offset).astype(np.float32)  # astype copies: safe after close
            self._release(info.offset, info.n_bytes)
            return values.reshape(info.shape)
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        qtype = GGMLQuantizationType(info.type_code)
        _, block_size, type_size = GGML_TYPES[info.type_code]
        raw = np.frombuffer(self._map, dtype=np.uint8, count=info.n_bytes, offset=info.offset)
        byte_shape = (*info.shape[:-1], info.shape[-1] // block_size * type_size) if info.shape else (type_size,)
        with np.errstate(invalid="ignore", over="ignore"):  # a corrupt block gives NaN; the loader refuses it
            values = dequantize(raw.reshape(byte_shape), qtype)
        if values.dtype != np.float32:
            values = values.astype(np.float32)
        # F32 (and F16 cast in place) can still point into the mapping, which close() invalidates.
        if np.may_share_memory(values, raw):
            values = values.copy()
        del raw
        self._release(info.offset, info.n_bytes)
        return values.reshape(info.shape)

    def read_blocks(self, name: str) -> np.ndarray:
        """A 2-D tensor's raw blocks, undecoded: (rows, bytes per row) uint8 (a copy, safe after close)."""
        info = self.tensors[name]
        _, block_size, type_size = GGML_TYPES[info.type_code]
        rows, width = info.shape
        raw = np.frombuffer(self._map, dtype=np.uint8, count=info.n_bytes, offset=info.offset)
        blocks = raw.reshape(rows, width // block_size * type_size).copy()
        del raw
        self._release(info.offset, info.n_bytes)
        return blocks

    def _release(self, offset: int, n_bytes: int) -> None:
        """Drop the file pages just read from this process's resident memory (the OS keeps them
        cached): otherwise the whole mapped file would count on top of the dequantized weights."""
        if hasattr(mmap, "MADV_DONTNEED"):
            start = offset - offset % mmap.PAGESIZE
            try:
                self._map.madvise(mmap.MADV_DONTNEED, start, offset + n_bytes - start)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:  # a view still exists; the mapping goes with the last reference
                pass
            self._map = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_malloc_trim = _load_malloc_trim()


def return_freed_heap() -> None:
    """Give memory freed by dequantisation temporaries back to the OS. glibc keeps freed blocks
    of a few MB in its heap, which would add ~40 MB of fragmentation to the loaded model's RSS."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    with GGUFFile(path) as f:
        return dict(f.metadata)
