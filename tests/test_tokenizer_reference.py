"""Exact ids against the reference tokenizers: SmolLM2 (its own pre-tokenization: digits split,
then GPT-2's byte-level regex) and GPT-2 through tiktoken."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lucidlm import Tokenizer

from conftest import DATA


@pytest.fixture(scope="module")
def smollm_oracle(smollm_path):
    """The oracle the issue names: `tokenizers` BPE over the GGUF's vocabulary and merges with
    Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)])."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from lucidlm.gguf_file import read_metadata

    meta = read_metadata(smollm_path)
    vocab = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    merges = [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]
    oracle = HFTokenizer(models.BPE(vocab, merges))
    oracle.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    oracle.decoder = decoders.ByteLevel()
    return oracle


PIECES = [
    "", " ", "  ", "     ", " " * 17, "\t", "\t\t x", "\n", "\n\n", "\n\n\n\n", "\r\n", "\r\n\r\n", " \n ",
    "Hello", "hello world", "  leading", "trailing  ", "don't", "I'M", "we'll", "they've", "'s", "it's'",
    "12345", "3.14159", " 2024", "a1b2c3", "١٢٣", "x 42 y",
    "日本語のテキスト", "Ελληνικά", "русский текст", "עברית", "العربية", "हिन्दी", "한국어", "ไทย",
    "e\u0301", "a\u0308\u0323", "Z\u0351\u0352\u0353",
    "👨\u200d👩\u200d👧\u200d👦", "👍🏽", "🏳️\u200d🌈", "🙂", "©®™",
    "<|im_start|>", "<|im_start|>system", "<|endoftext|>", "<|im_end|>\n",
    "def f(x):\n    return x ** 2\n", "{\"key\": [1, 2]}", "a\u00a0b", "\u3000", "…", "—",
]
HARD_STRINGS = sorted({a + b for a, b in itertools.product(PIECES, repeat=2)})


def test_enough_hard_strings():
    assert len(HARD_STRINGS) > 300


def test_smollm_matches_its_oracle_on_hard_strings(smollm_tokenizer, smollm_oracle):
    for text in HARD_STRINGS:
        assert smollm_tokenizer.encode(text) == smollm_oracle.encode(text).ids, repr(text)
        assert smollm_tokenizer.decode(smollm_tokenizer.encode(text)) == text


@pytest.mark.parametrize("corpus", ["tinyshakespeare.txt", "mixed_code_unicode.txt"])
def test_smollm_matches_its_oracle_on_whole_corpora(smollm_tokenizer, smollm_oracle, corpus):
    text = (DATA / corpus).read_text(encoding="utf-8")
    ids = smollm_tokenizer.encode(text)
    assert ids == smollm_oracle.encode(text).ids
    assert smollm_tokenizer.decode(ids) == text


def _encodable(tokenizer, text: str) -> bool:
    # SmolLM2's vocabulary has no token for a few bytes (e.g. 0x04); like the oracle, they vanish.
    return not any(b in tokenizer.missing_bytes for b in text.encode("utf-8"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_smollm_matches_its_oracle_on_generated_text(smollm_tokenizer, smollm_oracle, text):
    ids = smollm_tokenizer.encode(text)
    assert ids == smollm_oracle.encode(text).ids
    if _encodable(smollm_tokenizer, text):
        assert smollm_tokenizer.decode(ids) == text


def test_bytes_missing_from_the_vocabulary_are_dropped_like_the_oracle(smollm_tokenizer, smollm_oracle):
    assert b"\x04"[0] in smollm_tokenizer.missing_bytes
    assert smollm_tokenizer.encode("a\x04b") == smollm_oracle.encode("a\x04b").ids


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_file(DATA / "gpt2.tiktoken")


@pytest.fixture(scope="module")
def gpt2_tiktoken():
    import tiktoken
    import tiktoken.load

    from lucidlm.tokenizer.pretokenizer import GPT2_PATTERN

    ranks = tiktoken.load.load_tiktoken_bpe(str(DATA / "gpt2.tiktoken"))
    return tiktoken.Encoding("gpt2-local", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


@pytest.mark.parametrize("corpus", ["tinyshakespeare.txt", "mixed_code_unicode.txt"])
def test_gpt2_matches_tiktoken_on_whole_corpora(gpt2, gpt2_tiktoken, corpus):
    text = (DATA / corpus).read_text(encoding="utf-8")
    assert gpt2.encode(text) == gpt2_tiktoken.encode_ordinary(text)


def test_gpt2_end_of_text_is_50256(gpt2, gpt2_tiktoken):
    text = "first<|endoftext|>second"
    assert gpt2.special_tokens["<|endoftext|>"] == 50256 and gpt2.eos_token_id == 50256
    assert gpt2.encode(text, allowed_special="all") == gpt2_tiktoken.encode(text, allowed_special="all")
    assert 50256 not in gpt2.encode(text)  # plain text by default
    for text in HARD_STRINGS:
        assert gpt2.encode(text) == gpt2_tiktoken.encode_ordinary(text), repr(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_gpt2_matches_tiktoken_on_generated_text(gpt2, gpt2_tiktoken, text):
    ids = gpt2.encode(text)
    assert ids == gpt2_tiktoken.encode_ordinary(text)
    assert gpt2.decode(ids) == text


LONG_PIECES = ["a" * 5000, "=" * 3001, "-" * 777, "ab" * 1500, " " * 2000 + "x", "0x" + "f" * 999,
               "aGVsbG8gd29ybGQ" * 200, "é" * 1000, "🙂" * 300]


def test_long_pieces_take_the_heap_and_match_both_oracles(smollm_tokenizer, smollm_oracle, gpt2, gpt2_tiktoken):
    """A run of one character is one piece; the O(n log n) heap merges it exactly as the
    quadratic rescan would, which is what `tokenizers` and tiktoken do."""
    from lucidlm.tokenizer.bpe import HEAP_FROM

    for text in LONG_PIECES:
        assert len(text.encode("utf-8")) > HEAP_FROM
        assert smollm_tokenizer.encode(text) == smollm_oracle.encode(text).ids, text[:20]
        assert gpt2.encode(text) == gpt2_tiktoken.encode_ordinary(text), text[:20]


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="ab=- \n0é", min_size=17, max_size=300))
def test_heap_and_rescan_merge_every_piece_alike(smollm_tokenizer, text):
    from lucidlm.tokenizer.bpe import merge_piece_heap

    tok = smollm_tokenizer
    ids = [tok.byte_ids[b] for b in text.encode("utf-8")]
    rescanned = list(ids)
    while True:  # the textbook loop: merge the lowest-ranked pair, the leftmost on ties
        ranked = [(tok.ranks[p], i) for i, p in enumerate(zip(rescanned, rescanned[1:])) if p in tok.ranks]
        if not ranked:
            break
        rank, i = min(ranked)
        rescanned[i:i + 2] = [tok.merge_results[rank]]
    assert merge_piece_heap(list(ids), tok.ranks, tok.merge_results) == rescanned
