"""Tools for the hostile-input tests: a GGUF file as editable parts (so a test can plant exactly one
fault: an overlapping offset, a duplicate key), llama.cpp's acceptance rules as an oracle, and a
guard that fails a case running past its time or allocating past its budget."""

from __future__ import annotations

import signal
import struct
import tracemalloc
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

# GGUF value types with a fixed size; 8 = string, 9 = array.
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY, UINT32 = 8, 9, 4
MAX_DIMS = 4
# ggml type -> (block size, bytes per block), for the types the test files use
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 8: (32, 34), 30: (1, 2)}


@dataclass
class KV:
    key: str
    type: int
    raw: bytes  # the value's bytes, after its type code


@dataclass
class TensorEntry:
    name: str
    dims: list[int]
    type: int
    offset: int


@dataclass
class GGUFParts:
    version: int
    kvs: list[KV]
    tensors: list[TensorEntry]
    data: bytes  # the data section, from its aligned start
    n_kv: int | None = None  # what the header claims, when a test makes it lie
    n_tensors: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def alignment(self) -> int:
        for kv in self.kvs:
            if kv.key == "general.alignment" and kv.type == UINT32:
                return struct.unpack("<I", kv.raw)[0]
        return 32  # the default; an alignment of another type is refused by llama_cpp_accepts


def _string(buf: bytes, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, pos)
    return buf[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n


def _skip_value(buf: bytes, pos: int, kind: int) -> int:
    if kind in SCALAR_SIZES:
        return pos + SCALAR_SIZES[kind]
    if kind == STRING:
        return _string(buf, pos)[1]
    item, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    for _ in range(count):
        pos = _skip_value(buf, pos, item)
    return pos


def parse(buf: bytes) -> GGUFParts:
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos, kvs, tensors = 24, [], []
    for _ in range(n_kv):
        key, pos = _string(buf, pos)
        (kind,) = struct.unpack_from("<I", buf, pos)
        end = _skip_value(buf, pos + 4, kind)
        kvs.append(KV(key, kind, buf[pos + 4:end]))
        pos = end
    for _ in range(n_tensors):
        name, pos = _string(buf, pos)
        (n_dims,) = struct.unpack_from("<I", buf, pos)
        dims = list(struct.unpack_from(f"<{n_dims}Q", buf, pos + 4))
        pos += 4 + 8 * n_dims
        kind, offset = struct.unpack_from("<IQ", buf, pos)
        pos += 12
        tensors.append(TensorEntry(name, dims, kind, offset))
    parts = GGUFParts(version, kvs, tensors, b"")
    alignment = parts.alignment if parts.alignment > 0 else 32
    start = -(-pos // alignment) * alignment
    return replace(parts, data=buf[start:])


def serialize(parts: GGUFParts) -> bytes:
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", parts.version, len(parts.tensors) if parts.n_tensors is None else parts.n_tensors,
                       len(parts.kvs) if parts.n_kv is None else parts.n_kv)
    for kv in parts.kvs:
        key = kv.key.encode()
        out += struct.pack("<Q", len(key)) + key + struct.pack("<I", kv.type) + kv.raw
    for t in parts.tensors:
        name = t.name.encode()
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(t.dims))
        out += struct.pack(f"<{len(t.dims)}Q", *t.dims) + struct.pack("<IQ", t.type, t.offset)
    alignment = parts.alignment if parts.alignment > 0 else 32  # a planted bad alignment still needs a file
    out += b"\0" * (-len(out) % alignment)
    return bytes(out) + parts.data


def n_bytes(t: TensorEntry) -> int:
    block, size = BLOCKS[t.type]
    count = 1
    for d in t.dims:
        count *= d
    return count // block * size


def llama_cpp_accepts(parts: GGUFParts) -> bool:
    """The container rules llama.cpp's gguf reader applies (ggml/src/gguf.cpp): the counts match,
    keys and tensor names are unique, at most 4 dimensions, rows of whole blocks, and each tensor
    starts exactly where the previous one's data, padded to the alignment, ends, inside the file."""
    if parts.n_kv not in (None, len(parts.kvs)) or parts.n_tensors not in (None, len(parts.tensors)):
        return False
    keys = [kv.key for kv in parts.kvs]
    names = [t.name for t in parts.tensors]
    if len(set(keys)) < len(keys) or len(set(names)) < len(names):
        return False
    alignment = parts.alignment
    if parts.version not in (2, 3) or alignment <= 0 or alignment & (alignment - 1):
        return False
    if any(kv.key == "general.alignment" and kv.type != UINT32 for kv in parts.kvs):
        return False
    expected = 0
    for t in parts.tensors:
        if len(t.dims) > MAX_DIMS or t.type not in BLOCKS or t.dims[0] % BLOCKS[t.type][0]:
            return False
        if t.offset != expected:
            return False
        expected += -(-n_bytes(t) // alignment) * alignment
    return bool(parts.tensors) and expected - (-n_bytes(parts.tensors[-1]) % alignment) <= len(parts.data)


class Overrun(AssertionError):
    pass


@contextmanager
def bounded(seconds: float, megabytes: float):
    """Fail the case if it runs longer than `seconds` (SIGALRM interrupts it) or if Python and
    numpy allocate more than `megabytes` at its peak (tracemalloc sees both)."""
    def expire(signum, frame):
        raise Overrun(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        if peak > megabytes:
            raise Overrun(f"allocated {peak:.0f} MiB at its peak (budget {megabytes} MiB)")
    finally:
        tracemalloc.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
