"""Training objectives: masked-LM batches exactly as BERT builds them (chosen tokens, 80/10/10,
specials and padding never chosen, whole words together), and masked-LM pre-training from scratch
that beats the unigram baseline, resumes exactly, and leaves a model fill-mask can use."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lucidlm
from lucidlm.cli import main
from lucidlm.tokenizer import WordPieceTokenizer
from lucidlm.train.data import Split, Windows
from lucidlm.train.objectives import IGNORE, MaskedLM

from conftest import DATA, train_in_one_and_two_processes

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "king", "is", "dead", "long", "live", "##s", "##ly"]


def objective(**settings) -> MaskedLM:
    values = {"mask_probability": 0.15, "whole_word_mask": False, "seed": 0, **settings}
    return MaskedLM(WordPieceTokenizer(VOCAB), SimpleNamespace(**values))


def test_chosen_tokens_become_mask_random_or_stay_by_their_second_draw():
    o = objective()
    ids = torch.tensor([[2, 5, 6, 7, 8, 3, 0]])  # [CLS] the king is dead [SEP] [PAD]
    real = torch.tensor([[True] * 6 + [False]])
    choose = torch.tensor([[0.0, 0.1, 0.1, 0.1, 0.5, 0.0, 0.0]])  # below 0.15: the, king, is (and the specials)
    become = torch.tensor([[0.0, 0.5, 0.85, 0.95, 0.0, 0.0, 0.0]])  # mask, random, keep
    replacements = torch.full((1, 7), 2)  # ordinary tokens start at "the" (id 5): the third is "is" (id 7)
    inputs, labels = o.corrupt(ids, real, torch.stack([choose, become]), replacements)
    assert labels.tolist() == [[IGNORE, 5, 6, 7, IGNORE, IGNORE, IGNORE]]
    assert inputs.tolist() == [[2, 4, 7, 7, 8, 3, 0]]  # the -> [MASK], king -> random "is", is stays


def test_the_shares_are_fifteen_percent_and_eighty_ten_ten():
    o = objective()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(VOCAB), (400, 128), generator=generator)
    real = torch.ones_like(ids, dtype=torch.bool)
    inputs, labels = o.corrupt(ids, real, torch.rand(2, 400, 128, generator=generator),
                               torch.randint(len(o.ordinary), (400, 128), generator=generator))
    chosen = labels != IGNORE
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    masked = (inputs == o.mask_id)[chosen].float().mean().item()
    changed = ((inputs != ids) & (inputs != o.mask_id))[chosen].float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01)
    assert changed == pytest.approx(0.1 * (1 - 1 / len(o.ordinary)), abs=0.01)  # a random token may be itself
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert not bool(torch.isin(inputs[chosen & (inputs != o.mask_id)], o.special).any())  # never a special


def test_special_tokens_and_padding_are_never_chosen_and_every_batch_has_a_target():
    o = objective(mask_probability=0.99)
    ids = torch.tensor([[2, 5, 3, 0, 0]])
    real = torch.tensor([[True, True, True, False, False]])
    _, labels = o.corrupt(ids, real, torch.zeros(2, 1, 5), torch.zeros(1, 5, dtype=torch.long))
    assert labels.tolist() == [[IGNORE, 5, IGNORE, IGNORE, IGNORE]]
    o = objective(mask_probability=0.01)
    _, labels = o.corrupt(ids, real, torch.ones(2, 1, 5) * 0.9, torch.zeros(1, 5, dtype=torch.long))
    assert labels.tolist() == [[IGNORE, 5, IGNORE, IGNORE, IGNORE]]  # nothing drawn: one is chosen anyway


def test_whole_word_masking_chooses_all_pieces_of_a_word_by_its_first_draw():
    o = objective(whole_word_mask=True)
    ids = torch.tensor([[2, 6, 11, 9, 10, 12, 3]])  # [CLS] king ##s long live ##ly [SEP]
    real = torch.ones_like(ids, dtype=torch.bool)
    choose = torch.tensor([[0.0, 0.9, 0.0, 0.0, 0.1, 0.9, 0.0]])  # "kings" no (first piece), "long" and "lively" yes
    _, labels = o.corrupt(ids, real, torch.stack([choose, torch.zeros(1, 7)]), torch.zeros(1, 7, dtype=torch.long))
    assert labels.tolist() == [[IGNORE, IGNORE, IGNORE, 9, 10, 12, IGNORE]]


def test_masked_windows_are_cls_text_sep_padded_on_the_right():
    o = objective()
    windows = Windows(Split(np.array([5, 6, 7, 8, 9, 10, 11], dtype=np.uint16), np.array([0, 5])), window=3, stride=3)
    data = o.dataset(windows)
    batch = data.batch(list(range(len(data))), torch.Generator().manual_seed(1), slice(0, None))
    original = torch.where(batch["labels"] != IGNORE, batch["labels"], batch["input_ids"])
    # rows of window + 1 tokens, so every token is in one (8 ends the first row and starts the tail)
    assert original.tolist() == [[2, 5, 6, 7, 8, 3], [2, 8, 9, 3, 0, 0], [2, 10, 11, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0]]


def test_a_process_gets_its_rows_of_the_global_batch_with_the_same_masks():
    o = objective(mask_probability=0.5)
    windows = Windows(Split(np.arange(5, 13, dtype=np.uint16).repeat(20), np.array([0])), window=7, stride=1)
    data = o.dataset(windows)
    whole = data.batch(list(range(8)), torch.Generator().manual_seed(3), slice(0, 8))
    half = data.batch(list(range(8)), torch.Generator().manual_seed(3), slice(4, 8))
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(whole[key][4:], half[key])
    chosen = (whole["labels"] != IGNORE).sum()
    assert whole["share"] == 1.0 and half["share"] == pytest.approx(2 * (half["labels"] != IGNORE).sum() / chosen)


# --- training from scratch ---------------------------------------------------------------------

TINY = ["--preset", "tiny-bert", "--eval-iters", "4", "--sample-tokens", "20", "--threads", "2", "--no-plot",
        "--bpe-vocab-size", "600"]
TINY_MODEL = "[model]\ncontext_length = 64\nd_model = 64\nn_layers = 2\nn_heads = 2\nd_ff = 256\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlm")
    (folder / "shk.txt").write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:150000],
                                    encoding="utf-8")
    (folder / "tiny.toml").write_text(TINY_MODEL, encoding="utf-8")
    return folder


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_masked_lm_pretraining_beats_the_unigram_baseline_and_fills_masks(corpus, tmp_path, capsys):
    run = tmp_path / "bert"
    assert main(["train", "--data", str(corpus / "shk.txt"), *TINY, "--config", str(corpus / "tiny.toml"),
                 "--max-iters", "1000", "--eval-interval", "250", "--learning-rate", "2e-3", "--warmup-iters", "50",
                 "--out", str(run)]) == 0
    err = capsys.readouterr().err
    baseline = float(err.split("unigram baseline (token frequencies only): loss ")[1].split(",")[0])
    final = [r for r in records(run) if "val_loss" in r]
    assert final[0]["val_loss"] > baseline  # a random model knows less than token frequencies
    # measured 0.36 below the baseline; 0.25 leaves room for another machine's float rounding
    assert final[-1]["val_loss"] < baseline - 0.25, (final[-1]["val_loss"], baseline)
    assert "fill-mask --model" in err and "⟨" in (run / "samples.txt").read_text(encoding="utf-8")
    model, tok = lucidlm.load(run)
    assert model.config.head == "mlm" and not model.config.causal and tok.kind == "wordpiece"
    assert main(["fill-mask", "--model", str(run), "good [MASK] , my lord ."]) == 0
    assert "mask at token" in capsys.readouterr().out


def test_masked_lm_training_resumes_exactly(corpus, tmp_path):
    common = ["--data", str(corpus / "shk.txt"), *TINY, "--config", str(corpus / "tiny.toml"), "--eval-interval", "3",
              "--checkpoint-interval", "3", "--dropout", "0.1", "--whole-word-mask"]
    assert main(["train", *common, "--max-iters", "6", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *common, "--max-iters", "3", "--out", str(tmp_path / "split")]) == 0
    assert main(["train", "--resume", str(tmp_path / "split"), "--max-iters", "6"]) == 0
    losses = lambda run: [(r["step"], r.get("train_loss"), r.get("val_loss")) for r in records(run)]
    assert losses(tmp_path / "split") == losses(tmp_path / "straight")


@pytest.mark.parametrize("argv, message", [
    (["--preset", "shakespeare-char", "--objective", "mlm"], "needs a tokenizer with a mask token"),
    (["--preset", "small-bpe", "--objective", "mlm", "--tokenizer", "WP"], "sees both sides"),
    (["--preset", "tiny-bert", "--objective", "next-token", "--tokenizer", "WP"], "would let it read the answer"),
    (["--preset", "tiny-bert", "--tokenizer", "char"], "needs a tokenizer with a mask token"),
    (["--preset", "tiny-bert", "--mask-probability", "1.5"], "mask_probability"),
    (["--preset", "small-bpe", "--objective", "lm"], "objective"),
])
def test_objectives_that_do_not_fit_the_model_or_tokenizer_are_one_line_errors(corpus, tmp_path, capsys, argv,
                                                                               message):
    wordpiece = tmp_path / "wp"
    WordPieceTokenizer.train((corpus / "shk.txt").read_text(encoding="utf-8")[:20000], 300).save(wordpiece)
    argv = [str(wordpiece) if a == "WP" else a for a in argv]
    assert main(["train", "--data", str(corpus / "shk.txt"), *argv, "--max-iters", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_whole_word_masking_needs_wordpiece(corpus, tmp_path, capsys):
    from lucidlm.tokenizer import Tokenizer

    tok = Tokenizer.train((corpus / "shk.txt").read_text(encoding="utf-8")[:20000], 300,
                          special_tokens=("<|endoftext|>", "[MASK]"))
    tok.mask_token_id = tok.special_tokens["[MASK]"]
    with pytest.raises(lucidlm.LucidError, match="whole-word-mask needs a WordPiece"):
        MaskedLM(tok, SimpleNamespace(mask_probability=0.15, whole_word_mask=True))


@pytest.mark.slow
def test_two_processes_pretrain_like_one(corpus, tmp_path):
    """Each process weighs its masked-token loss by its share of the global batch's chosen tokens,
    so two processes with batch 4 log the losses of one with batch 8."""
    common = ["--data", str(corpus / "shk.txt"), *TINY, "--config", str(corpus / "tiny.toml"), "--max-iters", "4",
              "--eval-interval", "2", "--autocast", "off", "--threads", "1", "--sample-tokens", "0"]
    one, two = map(records, train_in_one_and_two_processes(common, tmp_path))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
