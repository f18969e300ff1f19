"""Hostile GGUF files: every mutation of a small real-layout file (a tiny Llama with a tokenizer)
ends in a lucidlm error or a load, never another exception, a hang or a runaway allocation; and
whatever llama.cpp's reader refuses, lucidlm refuses too."""

import random
import struct

import pytest

import lucidlm
from lucidlm.errors import LucidError
from lucidlm.weights.info import describe

from conftest import make_tiny_hf_model
from gguf_helpers import write_llama_gguf
from hostile import ARRAY, STRING, UINT32, KV, bounded, llama_cpp_accepts, parse, serialize

SECONDS, MEGABYTES = 20, 300


@pytest.fixture(scope="module")
def original(tmp_path_factory, shakespeare):
    import gguf

    tokenizer = lucidlm.Tokenizer.train(shakespeare[:20000], 300, pattern="gpt2")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_llama_gguf(path, make_tiny_hf_model("llama"), qtype=gguf.GGMLQuantizationType.F16, tokenizer=tokenizer)
    return path.read_bytes()


def outcome(path, also_describe: bool = True) -> str:
    """'refused' (a lucidlm error) or 'loaded'; anything else fails the test."""
    with bounded(SECONDS, MEGABYTES):
        try:
            lucidlm.load(path)
            if also_describe:
                describe(path)
        except LucidError as exc:
            assert "\n" not in str(exc), str(exc)
            return "refused"
    return "loaded"


def u32(value: int) -> bytes:
    return struct.pack("<I", value)


def string(text: str) -> bytes:
    return struct.pack("<Q", len(text.encode())) + text.encode()


def set_kv(parts, key: str, kind: int, raw: bytes) -> None:
    for kv in parts.kvs:
        if kv.key == key:
            kv.type, kv.raw = kind, raw
            return
    parts.kvs.append(KV(key, kind, raw))


def _mutations():
    def offset_overlap(p): p.tensors[3].offset = p.tensors[2].offset
    def offset_misaligned(p): p.tensors[-1].offset += 4
    def offset_gap(p): p.tensors[1].offset += p.alignment
    def duplicate_key(p): p.kvs.append(KV(p.kvs[1].key, p.kvs[1].type, p.kvs[1].raw))
    def duplicate_key_other_value(p): p.kvs.append(KV("llama.block_count", UINT32, u32(1)))
    def duplicate_tensor(p): p.tensors[4].name = p.tensors[3].name
    def five_dimensions(p): p.tensors[0].dims = p.tensors[0].dims + [1]
    def type_changed(p): p.tensors[2].type = 0 if p.tensors[2].type == 1 else 1
    def kv_count_high(p): p.n_kv = len(p.kvs) + 1
    def kv_count_low(p): p.n_kv = len(p.kvs) - 1
    def tensor_count_high(p): p.n_tensors = len(p.tensors) + 1
    def tensor_count_huge(p): p.n_tensors = 2 ** 62
    def data_cut(p): p.data = p.data[:-100]
    def block_count_flipped(p): set_kv(p, "llama.block_count", UINT32, u32(524318))
    def block_count_string(p): set_kv(p, "llama.block_count", STRING, string("thirty"))
    def width_huge(p): set_kv(p, "llama.embedding_length", UINT32, u32(2 ** 31))
    def heads_zero(p): set_kv(p, "llama.attention.head_count", UINT32, u32(0))
    def pre_as_number(p): set_kv(p, "tokenizer.ggml.pre", UINT32, u32(7))
    def template_as_number(p): set_kv(p, "tokenizer.chat_template", UINT32, u32(7))
    def eos_huge(p): set_kv(p, "tokenizer.ggml.eos_token_id", UINT32, u32(10 ** 9))
    def alignment_3(p): set_kv(p, "general.alignment", UINT32, u32(3))
    def alignment_0(p): set_kv(p, "general.alignment", UINT32, u32(0))
    def alignment_string(p): set_kv(p, "general.alignment", STRING, string("32"))
    def alignment_u64(p): set_kv(p, "general.alignment", 10, struct.pack("<Q", 32))
    def alignment_i32(p): set_kv(p, "general.alignment", 5, struct.pack("<i", 32))
    def nested_arrays(p): set_kv(p, "x.nested", ARRAY, struct.pack("<IQ", ARRAY, 1) + struct.pack("<IQ", UINT32, 0))
    def array_huge(p): set_kv(p, "x.huge", ARRAY, struct.pack("<IQ", STRING, 2 ** 60))
    def tokens_as_numbers(p): set_kv(p, "tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", UINT32, 2) + u32(1) + u32(2))
    def merges_unknown(p): set_kv(p, "tokenizer.ggml.merges", ARRAY, struct.pack("<IQ", STRING, 1) + string("zz qq"))
    def merges_not_pairs(p): set_kv(p, "tokenizer.ggml.merges", ARRAY, struct.pack("<IQ", STRING, 1) + string("abc"))
    def types_short(p): set_kv(p, "tokenizer.ggml.token_type", ARRAY, struct.pack("<IQ", 5, 1) + struct.pack("<i", 1))
    def unknown_tensor_type(p): p.tensors[5].type = 99
    def empty_dimension(p): p.tensors[0].dims = [0] + p.tensors[0].dims[1:]
    def version_9(p): p.version = 9
    return {f.__name__: f for f in (
        offset_overlap, offset_misaligned, offset_gap, duplicate_key, duplicate_key_other_value, duplicate_tensor,
        five_dimensions, type_changed, kv_count_high, kv_count_low, tensor_count_high, tensor_count_huge, data_cut,
        block_count_flipped, block_count_string, width_huge, heads_zero, pre_as_number, template_as_number,
        eos_huge, alignment_3, alignment_0, alignment_string, alignment_u64, alignment_i32, nested_arrays, array_huge, tokens_as_numbers,
        merges_unknown, merges_not_pairs, types_short, unknown_tensor_type, empty_dimension, version_9)}


MUTATIONS = _mutations()


def test_the_original_loads_and_the_oracle_accepts_it(original, tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(original)
    assert llama_cpp_accepts(parse(original))
    assert serialize(parse(original)) == original  # the parts writer is faithful
    assert outcome(path) == "loaded"


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_planted_fault_is_refused_whenever_llama_cpp_refuses_it(original, tmp_path, name):
    parts = parse(original)
    MUTATIONS[name](parts)
    path = tmp_path / "m.gguf"
    path.write_bytes(serialize(parts))
    got = outcome(path)
    if not llama_cpp_accepts(parts):
        assert got == "refused", name


def test_copying_one_tensors_offset_onto_another_is_refused_in_the_real_model(smollm_path, tmp_path):
    """The issue's reproduction: blk.3.attn_q.weight given blk.2.attn_q.weight's offset."""
    data = smollm_path.read_bytes()
    parts = parse(data[: 16 * 2 ** 20])  # the header is at the front; the data section is not needed
    offsets = {t.name: t.offset for t in parts.tensors}
    old, new = struct.pack("<Q", offsets["blk.3.attn_q.weight"]), struct.pack("<Q", offsets["blk.2.attn_q.weight"])
    name = b"blk.3.attn_q.weight"
    at = data.index(name) + len(name)
    at = data.index(old, at)  # after its rank, dims and type comes the offset
    path = tmp_path / "copy.gguf"
    path.write_bytes(data[:at] + new + data[at + 8:])
    with pytest.raises(LucidError, match=r"blk\.3\.attn_q\.weight has offset .*, expected"):
        lucidlm.load(path)


def _random_mutation(data: bytes, rng: random.Random, header_end: int) -> bytes:
    kind = rng.choice(["flip", "flip", "flip", "truncate", "splice", "zero"])
    buf = bytearray(data)
    if kind == "flip":  # most faults go into the header, where the structure is
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(header_end) if rng.random() < 0.8 else rng.randrange(len(buf))
            buf[at] ^= 1 << rng.randrange(8)
        return bytes(buf)
    if kind == "truncate":
        return bytes(buf[:rng.randrange(len(buf))])
    if kind == "splice":
        at, length = rng.randrange(header_end), rng.randint(1, 64)
        return bytes(buf[:at] + buf[at + length:at + 2 * length] + buf[at:])
    at = rng.randrange(header_end)
    buf[at:at + 8] = b"\xff" * 8
    return bytes(buf)


def test_random_mutations_end_in_an_error_or_a_load(original, tmp_path):
    rng = random.Random(20261202)
    header_end = len(original) - len(parse(original).data)
    path = tmp_path / "m.gguf"
    seen = {"refused": 0, "loaded": 0}
    for case in range(1000):
        path.write_bytes(_random_mutation(original, rng, header_end))
        try:
            seen[outcome(path, also_describe=case % 4 == 0)] += 1
        except BaseException as exc:
            raise AssertionError(f"case {case}: {type(exc).__name__}: {exc}") from exc
    assert seen["refused"] > 300 and seen["loaded"] > 30, seen
