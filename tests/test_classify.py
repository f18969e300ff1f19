"""Classification fine-tuning: transformers' GPT2- and LlamaForSequenceClassification load and export
with the same logits, the head reads the last real token whatever the padding, --train head trains the
head only, lucidlm finetune-classifier learns an easy task and saves a run that reloads, bad input is
one clear line."""

from __future__ import annotations

import json
import random

import pytest
import torch

import lucidlm
from lucidlm import Config, Tokenizer
from lucidlm.cli import main
from lucidlm.model import Transformer
from lucidlm.model.heads import last_real_token, with_classifier_head
from lucidlm.train.baselines import NaiveBayes, majority_accuracy
from lucidlm.train.classifier import LabelledBatches, accuracy, choose_trainable, train_classifier
from lucidlm.train.labelled import read_labelled, split_labelled

from conftest import DATA, tiny_hf_config

LABELS = ["ham", "spam", "eggs"]


def hf_classifier(family: str):
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cls = {"gpt2": transformers.GPT2ForSequenceClassification,
           "llama": transformers.LlamaForSequenceClassification}[family]
    config = tiny_hf_config(family, num_labels=3, pad_token_id=0, id2label=dict(enumerate(LABELS)),
                            label2id={name: i for i, name in enumerate(LABELS)})
    return cls(config).eval()


def right_padded_batch():
    """ids (3, 9) padded on the right with pad id 0 (transformers finds each text's end from it), and the mask."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 96, (3, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[2, 7:] = 0
    return ids.masked_fill(mask == 0, 0), mask


# --- the head --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_sequence_classifier_loads_and_exports_with_transformers_logits(family, tmp_path):
    import transformers

    reference = hf_classifier(family)
    reference.save_pretrained(tmp_path / "hf")
    model, _ = lucidlm.load(tmp_path / "hf")
    config = model.config
    assert (config.head, config.n_labels, config.classify_token, config.classifier_bias) == ("classify", 3, "last", False)
    assert model.labels == dict(enumerate(LABELS))
    ids, mask = right_padded_batch()
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask).logits
        torch.testing.assert_close(model(ids, attention_mask=mask), expected, atol=1e-5, rtol=1e-5)
        lucidlm.export_hf(model, None, tmp_path / "out")
        again = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out").eval()
        assert type(again) is type(reference) and again.config.id2label == dict(enumerate(LABELS))
        torch.testing.assert_close(again(ids, attention_mask=mask).logits, expected, atol=1e-5, rtol=1e-5)


def test_the_last_real_token_is_found_with_left_or_right_padding_or_no_mask():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert last_real_token(mask, 5, 4, torch.device("cpu")).tolist() == [2, 4, 4, 1]
    assert last_real_token(None, 5, 2, torch.device("cpu")).tolist() == [4, 4]


def tiny_decoder_classifier() -> Transformer:
    torch.manual_seed(0)
    return Transformer(Config(vocab_size=50, context_length=32, d_model=32, n_layers=2, n_heads=4, head="classify",
                              n_labels=3, classify_token="last", classifier_bias=False)).eval()


@torch.no_grad()
def test_padding_on_either_side_gives_the_logits_of_the_text_alone():
    model = tiny_decoder_classifier()
    text = torch.tensor([[7, 3, 9, 21, 5]])
    alone = model(text)  # no mask: the last position
    right = model(torch.tensor([[7, 3, 9, 21, 5, 0, 0]]), attention_mask=torch.tensor([[1] * 5 + [0] * 2]))
    left = model(torch.tensor([[0, 0, 7, 3, 9, 21, 5]]), attention_mask=torch.tensor([[0] * 2 + [1] * 5]))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(model(text[:, :4]), alone)  # another last token, other logits


def test_an_encoder_keeps_its_pooled_first_token(tmp_path):
    import transformers

    config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(tmp_path / "bert")
    model, _ = lucidlm.load(tmp_path / "bert")
    with_classifier_head(model, 4)
    assert (model.config.classify_token, model.config.classifier_bias, model.config.n_labels) == ("first", True, 4)
    assert model.lm_head.pooler is model.pooler is not None
    assert model(torch.randint(0, 99, (2, 6))).shape == (2, 4)


# --- what trains -----------------------------------------------------------------------------------

def words_tokenizer() -> Tokenizer:
    return Tokenizer.train(" ".join(FILLER + ["red", "blue"]) * 20, 300)


FILLER = "the a of and to in is it that was for on are as with his they at be this have from".split()


def easy_records(n: int = 48) -> list[dict]:
    """The label is the colour named by the last word: easy for a head on the last token."""
    rng = random.Random(0)
    out = []
    for i in range(n):
        colour = ("red", "blue")[i % 2]
        out.append({"text": " ".join(rng.choices(FILLER, k=rng.randint(3, 8))) + " " + colour,
                    "label": "warm" if colour == "red" else "cold"})
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny random Llama-shaped decoder with a small BPE, saved in our format, and easy labelled data."""
    folder = tmp_path_factory.mktemp("tiny-decoder")
    tokenizer = words_tokenizer()
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=tokenizer.vocab_size, context_length=32, d_model=32, n_layers=2,
                               n_heads=4, tie_embeddings=True))
    lucidlm.save(model, tokenizer, folder / "model")
    data = folder / "easy.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in easy_records()))
    return folder / "model", data


@pytest.mark.parametrize("part", ["head", "last-block"])
def test_only_the_chosen_parts_train(tiny_model, part):
    model, tokenizer = lucidlm.load(tiny_model[0], dtype="float32")
    with_classifier_head(model, 2)
    choose_trainable(model, part)
    trained = ("lm_head.",) if part == "head" else ("lm_head.", "blocks.1.", "final_norm.")
    assert all(p.requires_grad == name.startswith(trained) for name, p in model.named_parameters())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    records, names = read_labelled(tiny_model[1])
    train_classifier(model, LabelledBatches(records, tokenizer, True, 16), steps=3, batch_size=4, lr=1e-2, seed=0)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith(trained), name


def test_lora_trains_the_adapters_and_the_head(tiny_model):
    model, _ = lucidlm.load(tiny_model[0], dtype="float32")
    with_classifier_head(model, 2)
    choose_trainable(model, "lora")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in name or name.startswith("lm_head.") for name in trainable)
    assert any(name.startswith("lm_head.classifier.") for name in trainable)


def test_a_saved_classifier_reloads_with_the_same_logits_and_labels(tiny_model, tmp_path):
    model, tokenizer = lucidlm.load(tiny_model[0], dtype="float32")
    with_classifier_head(model, 3, {0: "a", 1: "b", 2: "c"}, seed=5)
    lucidlm.save(model, tokenizer, tmp_path / "cls")
    again, _ = lucidlm.load(tmp_path / "cls")
    assert again.labels == {0: "a", 1: "b", 2: "c"} and again.config == model.config
    ids, mask = torch.tensor([[5, 6, 7, 0], [8, 9, 10, 11]]), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids, attention_mask=mask), model(ids, attention_mask=mask))


# --- data and baselines ------------------------------------------------------------------------------

def test_the_split_is_seeded_and_keeps_every_label(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i}", "label": i % 3}) + "\n" for i in range(30)))
    records, names = read_labelled(path)
    assert names == ["0", "1", "2"]
    train, test = split_labelled(records, names, 0.2, seed=4)
    assert (len(train), len(test)) == (24, 6) and sorted(r.label for r in test) == [0, 0, 1, 1, 2, 2]
    assert split_labelled(records, names, 0.2, seed=4) == (train, test)
    assert split_labelled(records, names, 0.2, seed=5) != (train, test)


def test_speakers_data_and_baselines(tmp_path, capsys):
    out = tmp_path / "speakers.jsonl"
    assert main(["data", "speakers", "--out", str(out), "--corpus", str(DATA / "tinyshakespeare.txt")]) == 0
    assert "460 records" in capsys.readouterr().out
    records, names = read_labelled(out)
    assert names == ["DUKE VINCENTIO", "GLOUCESTER", "PETRUCHIO", "ROMEO"] and len(records) == 460
    assert not any(name + ":" in r.text for r in records for name in names)  # the speaker is cut off
    train, test = split_labelled(records, names, 0.2, 0)
    assert majority_accuracy(train, test) == 0.25  # balanced
    assert 0.5 < NaiveBayes(train, len(names)).accuracy(test) < 0.9  # neither impossible nor trivial


# --- the command -------------------------------------------------------------------------------------

def test_finetune_classifier_learns_an_easy_task_and_its_run_reloads(tiny_model, tmp_path, capsys):
    model_path, data = tiny_model
    run = tmp_path / "run"
    assert main(["finetune-classifier", "--model", str(model_path), "--data", str(data), "--out", str(run),
                 "--train", "all", "--steps", "40", "--lr", "3e-3", "--test-fraction", "0.25", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "48 records, 2 labels (cold, warm); 36 train, 12 test (seed 0)" in out
    results = json.loads((run / "run.json").read_text())["results"]
    assert results["after"] > 0.75 and results["majority"] == 0.5  # chance is 0.5
    model, tokenizer = lucidlm.load(run)
    assert model.config.head == "classify" and model.labels == {0: "cold", 1: "warm"}
    records, names = read_labelled(data)
    _, test = split_labelled(records, names, 0.25, 0)
    assert accuracy(model, LabelledBatches(test, tokenizer, True, 128)) == results["after"]


@pytest.mark.parametrize("lines, message", [
    (None, "no such file"),
    ([{"text": "a"}], 'line 1: a record needs "text"'),
    ([{"text": "a", "label": True}], 'line 1: a record needs "text"'),
    (["not json"], "line 1: not JSON"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}], "a classifier needs at least two labels"),
    ([{"text": "a", "label": "x"}, {"text": "b", "label": "x"}, {"text": "c", "label": "y"}],
     "the label 'y' has 1; every label needs at least 2"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": "x"}], "a mix of strings and integers"),
])
def test_bad_input_is_one_clear_line(tmp_path, capsys, lines, message):
    path = tmp_path / "bad.jsonl"
    if lines is not None:
        path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    assert main(["finetune-classifier", "--model", "nowhere", "--data", str(path), "--out",
                 str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # nothing claimed before the data is known to be good
