"""GGUF loading: config from metadata, every supported tensor type, llama.cpp's q/k permutation
undone, the tokenizer and template from the same file, and a clear error for every bad file."""

import struct

import gguf
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucidlm
from lucidlm.errors import FormatError, LucidError
from lucidlm.gguf_file import GGML_TYPES, GGUFFile

from conftest import make_tiny_hf_model
from gguf_helpers import reference_with, write_gguf, write_llama_gguf

Q = gguf.GGMLQuantizationType


pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(scope="module")
def tiny_llama():
    return make_tiny_hf_model("llama", hidden_size=64, intermediate_size=96, tie_word_embeddings=False)


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0])
def test_quantized_llama_matches_the_reference_with_the_same_weights(tiny_llama, tmp_path, qtype):
    path = tmp_path / "tiny.gguf"
    weights = write_llama_gguf(path, tiny_llama, qtype)
    reference = reference_with(tiny_llama, weights)
    model, tokenizer = lucidlm.load(path, dtype="float32")  # dequantized: the file's numbers exactly
    assert tokenizer is None
    assert model.config.n_kv_heads == 2 and model.config.d_model == 64 and not model.config.tie_embeddings
    ids = torch.randint(0, 96, (2, 12))
    torch.testing.assert_close(model(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_f32_file_reproduces_the_original_model_exactly(tiny_llama, tmp_path):
    # No quantization: this checks the un-permutation against the original weights, not our own.
    write_llama_gguf(tmp_path / "f32.gguf", tiny_llama)
    model, _ = lucidlm.load(tmp_path / "f32.gguf")
    ids = torch.randint(0, 96, (1, 16))
    torch.testing.assert_close(model(ids), tiny_llama(ids).logits, atol=1e-5, rtol=1e-5)


def _k_quant_blocks(qtype, n_blocks: int, rng) -> np.ndarray:
    """Random but valid K-quant blocks: random quants and scales, small finite fp16 factors."""
    block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    half = np.frombuffer(np.float16(0.01).tobytes(), dtype=np.uint8)
    # Offsets of the fp16 super-block factors (ggml-common.h block layouts).
    fields = {Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208], Q.Q2_K: [80, 82], Q.Q3_K: [108]}[qtype]
    for offset in fields:
        raw[:, offset:offset + 2] = half
    return raw


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q5_K, Q.Q6_K, Q.Q2_K, Q.Q3_K])
def test_k_quant_tensors_dequantize_with_their_shape(tmp_path, qtype):
    rng = np.random.default_rng(0)
    rows, cols = 3, 512
    raw = _k_quant_blocks(qtype, rows * cols // 256, rng).reshape(rows, -1)
    with GGUFFile(write_gguf(tmp_path / "k.gguf", tensors={"w": (raw, qtype)})) as f:
        values = f.read("w")
    assert values.shape == (rows, cols) and values.dtype == np.float32 and np.isfinite(values).all()
    np.testing.assert_array_equal(values, gguf.quants.dequantize(raw, qtype))


def test_tokenizer_and_chat_template_come_from_the_file(tmp_path):
    from lucidlm import Tokenizer

    tok = Tokenizer.train("hello world, hello there. " * 20, 300, pattern="gpt2",
                          special_tokens=["<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>")
    model_300 = make_tiny_hf_model("llama", vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=96)
    write_llama_gguf(tmp_path / "t.gguf", model_300, tokenizer=tok)
    model, loaded = lucidlm.load(tmp_path / "t.gguf")
    assert loaded.encode("hello world, hi") == tok.encode("hello world, hi")
    assert loaded.eos_token_id == tok.special_tokens["<|im_end|>"]
    text = loaded.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = loaded.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert ids[0] == tok.special_tokens["<|im_start|>"]


# --- bad files ----------------------------------------------------------------------------------

class GoodFile:
    """A valid file's bytes, behind a short repr (hypothesis prints its arguments)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __getitem__(self, index):
        return self.data[index]

    def __repr__(self) -> str:
        return f"GoodFile({len(self.data)} bytes)"


@pytest.fixture(scope="module")
def good_file(tmp_path_factory, tiny_llama):
    path = tmp_path_factory.mktemp("good") / "good.gguf"
    write_llama_gguf(path, tiny_llama, Q.Q8_0)
    return GoodFile(path.read_bytes())


@pytest.mark.parametrize("cut", [3, 10, 30, 200, 1000, -100, -1])
def test_truncated_files_give_a_clean_error(good_file, tmp_path, cut):
    path = tmp_path / "cut.gguf"
    path.write_bytes(good_file[:cut])
    with pytest.raises(FormatError, match="truncated|not a GGUF|corrupt"):
        lucidlm.load(path)


def test_a_lying_header_gives_a_clean_error(good_file, tmp_path):
    for offset, value in [(8, 10 ** 12), (16, 10 ** 12)]:  # tensor count, metadata count
        data = bytearray(good_file.data)
        data[offset:offset + 8] = struct.pack("<Q", value)
        path = tmp_path / "lie.gguf"
        path.write_bytes(bytes(data))
        with pytest.raises(FormatError):
            lucidlm.load(path)


def test_a_string_length_beyond_the_file_is_caught(good_file, tmp_path):
    data = bytearray(good_file.data)
    data[24:32] = struct.pack("<Q", 10 ** 15)  # length of the first key
    (tmp_path / "s.gguf").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="truncated"):
        lucidlm.load(tmp_path / "s.gguf")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), keep=st.integers(0, 64))
def test_random_bytes_never_crash_the_reader(good_file, tmp_path, data, keep):
    path = tmp_path / "random.gguf"
    path.write_bytes(good_file[:keep] + data)  # sometimes a valid start, then noise
    try:
        lucidlm.load(path)
    except LucidError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 2000), byte=st.integers(0, 255))
def test_a_flipped_byte_in_the_header_gives_a_clean_error_or_a_model(good_file, tmp_path, position, byte):
    data = bytearray(good_file.data)
    data[position] = byte
    path = tmp_path / "flip.gguf"
    path.write_bytes(bytes(data))
    try:
        lucidlm.load(path)
    except LucidError:
        pass


def test_a_corrupt_quantization_scale_is_refused_not_loaded_as_nan(tiny_llama, tmp_path):
    path = tmp_path / "nan.gguf"
    write_llama_gguf(path, tiny_llama, Q.Q8_0)
    with GGUFFile(path) as f:
        offset = f.tensors["blk.0.ffn_up.weight"].offset
    data = bytearray(path.read_bytes())
    data[offset:offset + 2] = np.float16(np.nan).tobytes()  # the first block's fp16 scale
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match=r"blk\.0\.ffn_up\.weight holds NaN"):
        lucidlm.load(path)


def test_non_utf8_metadata_is_named(tmp_path):
    write_gguf(tmp_path / "u.gguf", strings={"general.name": "x" * 5})
    data = (tmp_path / "u.gguf").read_bytes().replace(b"xxxxx", b"\xff\xfe\xfd\xfc\xfb")
    (tmp_path / "u.gguf").write_bytes(data)
    with pytest.raises(FormatError, match="general.name is not valid UTF-8"):
        GGUFFile(tmp_path / "u.gguf")


def test_unsupported_architecture_and_tensor_type(tiny_llama, tmp_path):
    with pytest.raises(FormatError, match="unsupported architecture 'mamba'"):
        lucidlm.load(write_gguf(tmp_path / "arch.gguf", "mamba"))

    _, type_size = gguf.GGML_QUANT_SIZES[Q.IQ2_XXS]
    iq = write_gguf(tmp_path / "iq.gguf", tensors={"w": (np.zeros((1, type_size), dtype=np.uint8), Q.IQ2_XXS)})
    with GGUFFile(iq) as f, pytest.raises(FormatError, match="tensor w uses IQ2_XXS"):
        f.read("w")


def test_our_table_of_ggml_types_is_gguf_pys():
    """gguf_file.GGML_TYPES spares the load gguf's import; its numbers must be llama.cpp's (a newer
    gguf may know types this table does not: files using them are refused by name)."""
    theirs = {int(t): (t.name, *gguf.GGML_QUANT_SIZES[t]) for t in Q}
    # an older gguf (pyproject allows 0.10) lacks the newest types: compare the codes it knows
    assert {code: theirs[code] for code in GGML_TYPES if code in theirs} == \
        {code: ours for code, ours in GGML_TYPES.items() if code in theirs}
    assert {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q6_K"} <= {name for name, _, _ in GGML_TYPES.values()}


def test_missing_and_unexpected_tensors_are_named(tiny_llama, tmp_path):
    write_llama_gguf(tmp_path / "missing.gguf", tiny_llama, drop=("blk.1.ffn_up.weight",))
    with pytest.raises(FormatError, match=r"missing tensor.*blocks\.1\.mlp\.up\.weight \(part up\)"):
        lucidlm.load(tmp_path / "missing.gguf")
    write_llama_gguf(tmp_path / "extra.gguf", tiny_llama, extra_tensors={"blk.0.mystery.weight": np.zeros(4, np.float32)})
    with pytest.raises(FormatError, match=r"unexpected tensor.*blk\.0\.mystery\.weight"):
        lucidlm.load(tmp_path / "extra.gguf")


def test_a_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(LucidError, match="no such file"):
        lucidlm.load(tmp_path / "nope.gguf")
