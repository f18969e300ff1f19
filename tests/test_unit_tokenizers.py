"""The tokenization rungs: ASCII code points, UTF-8 bytes and words, beside characters. Exact ids,
round trips, files, the one-line ASCII error, and `lucidlm tokenize --tokenizer` on the same text."""

import pytest

from lucidlm.cli import main
from lucidlm.errors import LucidError
from lucidlm.tokenizer import AsciiTokenizer, ByteTokenizer, CharTokenizer, WordTokenizer, load_tokenizer

from conftest import DATA

GERMAN = "Köche präferieren süße Schokolädentörtchen."


def test_ascii_ids_are_code_points_and_the_error_names_the_first_stranger():
    tok = AsciiTokenizer()
    assert tok.encode("Hi!\n") == [72, 105, 33, 10] and tok.decode([72, 105]) == "Hi" and tok.vocab_size == 128
    with pytest.raises(LucidError) as caught:
        tok.encode(GERMAN)
    message = str(caught.value)
    assert "'ö'" in message and "U+00F6" in message and "index 1" in message and "\n" not in message
    with pytest.raises(LucidError):
        tok.decode([200])


def test_bytes_write_any_text():
    tok = ByteTokenizer()
    ids = tok.encode(GERMAN)
    assert ids == list(GERMAN.encode("utf-8")) and len(ids) == 49 and tok.decode(ids) == GERMAN
    assert tok.encode("日") == [0xE6, 0x97, 0xA5]
    text = (DATA / "mixed_code_unicode.txt").read_text(encoding="utf-8")
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("日")[:2]) == "\ufffd"  # a cut character is replaced, never a crash


def test_words_learn_a_vocabulary_most_frequent_first():
    tok = WordTokenizer.train("Emma hates games but she is a great friend.\nShe is great, she is.")
    assert tok.words[:4] == ["<unk>", "is", "she", "great"]
    ids = tok.encode("Emma is a great friend, she hates chess.")
    assert tok.decode(ids) == "Emma is a great friend, she hates <unk>."  # spaces are not tokens
    assert tok.encode("chess") == [0]
    assert tok.decode(tok.encode("great.\nShe is")) == "great.\nShe is"


@pytest.mark.parametrize("tok", [AsciiTokenizer(), ByteTokenizer(), WordTokenizer.train("a b c, d.\ne"),
                                 CharTokenizer("ab \n")], ids=lambda t: t.kind)
def test_every_unit_tokenizer_round_trips_through_its_file(tok, tmp_path):
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again == tok and type(again) is type(tok) and again.vocab_size == tok.vocab_size
    assert again.encode("a b\n") == tok.encode("a b\n")


def test_a_damaged_word_file_is_a_clear_error(tmp_path):
    (tmp_path / "lucidlm-tokenizer.json").write_text('{"format": "lucidlm.words", "version": 1, "words": ["a"]}')
    with pytest.raises(LucidError, match="<unk> first"):
        load_tokenizer(tmp_path)


def test_tokenize_shows_the_difference_on_the_same_text(capsys):
    counts = {}
    for kind in ("bytes", "char", "words"):
        assert main(["tokenize", "--tokenizer", kind, "--color", "never", GERMAN]) == 0
        out = capsys.readouterr().out
        counts[kind] = int(out.split("\n\n")[1].split()[0])
    assert counts == {"bytes": 49, "char": 43, "words": 5}
    assert main(["tokenize", "--tokenizer", "ascii", GERMAN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not ASCII" in err and "'ö'" in err
    assert main(["tokenize", "--tokenizer", "ascii", "--ids", "Hi"]) == 0
    assert capsys.readouterr().out.split() == ["72", "105"]
    assert main(["tokenize", "--tokenizer", "words", "--decode", "1 2"]) == 2
    assert "cannot decode" in capsys.readouterr().err
