"""Hostile files other than GGUF: Hugging Face folders (config.json, safetensors), tokenizer.json,
tiktoken rank files and our own tokenizer files. Each mutation ends in a lucidlm error or a load,
never another exception, a hang or a runaway allocation; what contradicts itself is refused."""

import json
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lucidlm
from lucidlm import Tokenizer
from lucidlm.errors import FormatError, LucidError
from lucidlm.weights.info import describe

from conftest import make_tiny_hf_model
from hostile import bounded

SECONDS, MEGABYTES = 20, 300
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                      max_size=3), max_leaves=6)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def ends_well(action) -> str:
    with bounded(SECONDS, MEGABYTES):
        try:
            action()
        except LucidError as exc:
            assert "\n" not in str(exc), str(exc)
            return "refused"
    return "loaded"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf")
    make_tiny_hf_model("llama").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained(shakespeare):
    return Tokenizer.train(shakespeare[:30000], 300, pattern="gpt2")


def _paths(data, prefix=()):
    """Every path into a JSON value: keys and list indices."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data[:4]):
            yield from _paths(value, prefix + (i,))


def _replace(data, path, value):
    if not path:
        return value
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@FUZZ
@given(choice=st.integers(min_value=0), value=JSON_VALUES)
def test_config_json_with_any_value_anywhere(hf_folder, tmp_path, choice, value):
    import shutil

    folder = tmp_path / "m"
    if not folder.exists():
        shutil.copytree(hf_folder, folder)
    original = json.loads((hf_folder / "config.json").read_text())
    paths = list(_paths(original))
    (folder / "config.json").write_text(json.dumps(_replace(original, paths[choice % len(paths)], value)))
    ends_well(lambda: (lucidlm.load(folder), describe(folder)))


@pytest.mark.parametrize("change", [{"num_hidden_layers": 10 ** 9}, {"hidden_size": 2 ** 40}, {"vocab_size": -5},
                                    {"num_attention_heads": 0}, {"max_position_embeddings": "long"},
                                    {"rope_parameters": "fast"}])
def test_config_json_numbers_that_would_build_a_giant_are_refused(hf_folder, tmp_path, change):
    import shutil

    shutil.copytree(hf_folder, tmp_path / "m")
    data = json.loads((hf_folder / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**data, **change}))
    assert ends_well(lambda: lucidlm.load(tmp_path / "m")) == "refused"
    described = ends_well(lambda: describe(tmp_path / "m"))  # info reads no weights, but counts the layers
    assert described == "refused" or "num_hidden_layers" not in change


def test_deeply_nested_json_is_a_clean_error(tmp_path):
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="not valid JSON"):
        lucidlm.load(tmp_path)


def test_a_json_key_given_twice_is_refused(hf_folder, tmp_path):
    import shutil

    shutil.copytree(hf_folder, tmp_path / "m")
    text = (hf_folder / "config.json").read_text()
    (tmp_path / "m" / "config.json").write_text(text.replace('"hidden_size"', '"hidden_size": 8, "hidden_size"', 1))
    with pytest.raises(FormatError, match="'hidden_size' appears twice"):
        lucidlm.load(tmp_path / "m")


def test_random_damage_to_safetensors(hf_folder, tmp_path):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(hf_folder, folder)
    original = (hf_folder / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", original[:8])
    rng = random.Random(7)
    seen = {"refused": 0, "loaded": 0}
    for case in range(150):
        buf = bytearray(original)
        if case % 3 == 0:  # rewrite one field of the JSON header: a dtype, a shape, an offset
            header = json.loads(original[8:8 + header_len])
            name = rng.choice([k for k in header if k != "__metadata__"])
            field = rng.choice(["dtype", "shape", "data_offsets"])
            header[name][field] = rng.choice(["F64", "I8", "BOOL", [3], [2 ** 40, 2], [0, 10 ** 12], [5, 1], None])
            raw = json.dumps(header).encode()
            buf = bytearray(struct.pack("<Q", len(raw)) + raw + original[8 + header_len:])
        else:
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(8 + header_len) if rng.random() < 0.7 else rng.randrange(len(buf))
                buf[at] ^= 1 << rng.randrange(8)
        (folder / "model.safetensors").write_bytes(bytes(buf))
        seen[ends_well(lambda: lucidlm.load(folder))] += 1
    assert seen["refused"] > 50, seen


# --- tokenizer files ---------------------------------------------------------------------------------

@FUZZ
@given(choice=st.integers(min_value=0), value=JSON_VALUES)
def test_tokenizer_json_with_any_value_anywhere(trained, tmp_path, choice, value):
    path = tmp_path / "tokenizer.json"
    if not (tmp_path / "original.json").exists():
        trained.save_hf(tmp_path / "original.json")
    original = json.loads((tmp_path / "original.json").read_text())
    paths = list(_paths(original))
    path.write_text(json.dumps(_replace(original, paths[choice % len(paths)], value)))
    ends_well(lambda: Tokenizer.from_file(path).encode("To be, or not"))


@FUZZ
@given(choice=st.integers(min_value=0), value=JSON_VALUES)
def test_our_tokenizer_file_with_any_value_anywhere(trained, tmp_path, choice, value):
    folder = tmp_path / "tok"
    trained.save(folder)
    path = folder / "lucidlm-tokenizer.json"
    original = json.loads(path.read_text())
    paths = list(_paths(original))
    path.write_text(json.dumps(_replace(original, paths[choice % len(paths)], value)))
    ends_well(lambda: Tokenizer.from_file(folder).encode("To be, or not"))


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"]["vocab"].update({"Ġzzz": 10 ** 9}), "token ids run from"),
    (lambda d: d["model"]["vocab"].update({"Ġzzz": 5}), "token id 5 is given to both"),
    (lambda d: d["model"]["merges"].append(["Ġqq", "zz"]), "not in the vocabulary"),
    (lambda d: d["added_tokens"].append({"id": -3, "content": "<x>"}), "token ids run from"),
    (lambda d: d["added_tokens"].append({"id": d["model"]["vocab"]["~"], "content": "<x>"}), "is given to both"),
])
def test_a_tokenizer_json_that_contradicts_itself_is_refused(trained, tmp_path, change, message):
    trained.save_hf(tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    change(data)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message):
        with bounded(SECONDS, MEGABYTES):
            Tokenizer.from_file(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["base_tokens"].update({"0104": "5a5a"}), "key '0104' is not a token id"),
    (lambda d: d["base_tokens"].update({"-3": "5a5a"}), "key '-3' is not a token id"),
    (lambda d: d["special_tokens"].update({"<y>": 104}), "already a token"),
])
def test_our_tokenizer_file_that_gives_one_id_twice_is_refused(trained, tmp_path, change, message):
    trained.save(tmp_path)
    data = json.loads((tmp_path / "lucidlm-tokenizer.json").read_text())
    change(data)
    (tmp_path / "lucidlm-tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message):
        Tokenizer.from_file(tmp_path)


def test_a_huge_vocab_size_in_a_small_file_allocates_nothing(trained, tmp_path):
    trained.save(tmp_path)
    data = json.loads((tmp_path / "lucidlm-tokenizer.json").read_text())
    data["vocab_size"] = 10 ** 9
    (tmp_path / "lucidlm-tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="vocab_size 1000000000 does not fit"):
        with bounded(SECONDS, 50):
            Tokenizer.from_file(tmp_path)


@pytest.mark.parametrize("lines, message", [
    ("IQ== 0\nIg== 1\nIw== 1\n", "line 3: rank 1 appears twice"),
    ("IQ== 0\nIg== -1\n", "line 2: negative rank -1"),
    ("IQ== 0\nIQ== 1\n", "line 2: token b'!' already has a rank \\(line 1\\)"),
    ("IQ== 0\nIg== 1000000000\n", "ranks are not contiguous"),
    ("IQ== 0\nnot-base64!! 1\n", "line 2"),
    ("IQ== 0\nIg==\n", "line 2"),
])
def test_a_tiktoken_file_that_contradicts_itself_is_refused(tmp_path, lines, message):
    (tmp_path / "bad.tiktoken").write_text(lines)
    with pytest.raises(FormatError, match=message):
        with bounded(SECONDS, 50):
            Tokenizer.from_file(tmp_path / "bad.tiktoken")


def test_random_damage_to_a_tiktoken_file(tmp_path, trained):
    trained.save_tiktoken(tmp_path / "good.tiktoken")
    lines = (tmp_path / "good.tiktoken").read_text().splitlines()
    rng = random.Random(3)
    for case in range(200):
        damaged = list(lines)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(damaged))
            token, rank = damaged[i].split()
            damaged[i] = rng.choice([f"{token} {rng.randint(-5, 10 ** 12)}", f"{token}", f"{token[:-2]} {rank}",
                                     f"{damaged[rng.randrange(len(damaged))].split()[0]} {rank}", "", "\x00 1"])
        (tmp_path / "bad.tiktoken").write_text("\n".join(damaged) + "\n")
        ends_well(lambda: Tokenizer.from_file(tmp_path / "bad.tiktoken").encode("To be"))
