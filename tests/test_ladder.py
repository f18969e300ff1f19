"""The ladder: the worked examples reproduce the book's printed values, n-gram distributions sum
to 1, every rung trains from a seed (the same numbers twice) and its loss falls, and
`lucidlm ladder` writes its table, JSON and plot."""

import json
import math
import runpy

import numpy as np
import pytest
import torch

import lucidlm
from lucidlm import ladder, look
from lucidlm.cli import main
from lucidlm.config import PRESETS
from lucidlm.errors import LucidError
from lucidlm.ladder.climb import RungTrainer, neural_loss, validation_windows
from lucidlm.ladder.rungs import NEURAL, parse_rungs
from lucidlm.train.settings import TRAIN_PRESETS, TrainSettings
from lucidlm.train.trainer import Trainer

from conftest import DATA


def rounded(t: torch.Tensor) -> list:
    """As the book prints them: 4 decimals."""
    return np.round(t.double().numpy(), 4).tolist()


# --- the worked examples: Raschka, "Build a Large Language Model (From Scratch)", chapter 3 -------

def test_simplified_attention_matches_the_book():
    steps = ladder.simplified_attention(ladder.JOURNEY)
    assert rounded(steps.scores[1]) == [0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865]
    assert rounded(steps.weights[1]) == [0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581]
    assert rounded(steps.context[1]) == [0.4419, 0.6515, 0.5683]
    assert rounded(steps.context[4]) == [0.4671, 0.5910, 0.5266]
    assert steps.scale == 1.0 and torch.allclose(steps.weights.sum(-1), torch.ones(6))


def test_self_attention_matches_the_book():
    v1 = ladder.self_attention(ladder.JOURNEY, d_out=2)  # torch.rand weights after seed 123
    assert rounded(v1.queries[1]) == [0.4306, 1.4551]
    assert rounded(v1.scores[1]) == [1.2705, 1.8524, 1.8111, 1.0795, 0.5577, 1.5440]
    assert rounded(v1.weights[1]) == [0.1500, 0.2264, 0.2199, 0.1311, 0.0906, 0.1820]
    assert rounded(v1.context) == [[0.2996, 0.8053], [0.3061, 0.8210], [0.3058, 0.8203], [0.2948, 0.7939],
                                   [0.2927, 0.7891], [0.2990, 0.8040]]
    v2 = ladder.self_attention(ladder.JOURNEY, d_out=2, seed=789, init="linear")
    assert rounded(v2.context[0]) == [-0.0739, 0.0713] and rounded(v2.context[5]) == [-0.0754, 0.0693]


def test_causal_attention_masks_the_future_as_the_book_does():
    masked = ladder.causal_attention(ladder.JOURNEY, d_out=2, seed=789)  # the book's sa_v2 weights
    assert rounded(masked.weights) == [[1.0, 0, 0, 0, 0, 0], [0.5517, 0.4483, 0, 0, 0, 0],
                                       [0.38, 0.3097, 0.3103, 0, 0, 0], [0.2758, 0.246, 0.2462, 0.2319, 0, 0],
                                       [0.2175, 0.1983, 0.1984, 0.1888, 0.1971, 0],
                                       [0.1935, 0.1663, 0.1666, 0.1542, 0.1666, 0.1529]]
    assert masked.masked[0, 1] == -math.inf and rounded(masked.scores[5]) == \
        [0.3408, 0.1270, 0.1290, 0.0198, 0.1290, 0.0078]
    steps = ladder.causal_attention(ladder.JOURNEY, d_out=2)  # CausalAttention, seed 123
    assert rounded(steps.context) == [[-0.4519, 0.2216], [-0.5874, 0.0058], [-0.6300, -0.0632],
                                      [-0.5675, -0.0843], [-0.5526, -0.0981], [-0.5299, -0.1081]]


def test_multi_head_attention_matches_the_book():
    wrapper = ladder.multi_head_attention(ladder.JOURNEY, d_out=4, heads=2)  # MultiHeadAttentionWrapper
    assert rounded(wrapper.context[0]) == [-0.4519, 0.2216, 0.4772, 0.1063]
    assert rounded(wrapper.context[5]) == [-0.5299, -0.1081, 0.5077, 0.3493]
    assert len(wrapper.heads) == 2 and rounded(wrapper.heads[1].context[2]) == [0.6202, 0.3860]
    fused = ladder.multi_head_attention(ladder.JOURNEY, d_out=2, heads=2, out_proj=True)  # MultiHeadAttention
    assert rounded(fused.context) == [[0.3190, 0.4858], [0.2943, 0.3897], [0.2856, 0.3593], [0.2693, 0.3873],
                                      [0.2639, 0.3928], [0.2575, 0.4028]]


def test_attention_from_hand_written_tables():
    # Two features per word; computed by hand: scores Q K^T, divided by sqrt(2), causal, softmax.
    Q = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    K = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    steps = ladder.attention_from_qk(Q, K, causal=True, words=["Emma", "hates", "games"])
    assert steps.scores.tolist() == [[1, 0, 1], [0, 2, 1], [1, 2, 2]]
    e = math.exp
    row1 = [1 / (1 + e(2 / math.sqrt(2))), e(2 / math.sqrt(2)) / (1 + e(2 / math.sqrt(2)))]
    assert steps.weights[1].tolist()[:2] == pytest.approx(row1) and steps.weights[1, 2] == 0
    assert steps.weights[0].tolist() == [1.0, 0.0, 0.0]
    printed = str(steps)
    assert "   -inf" in printed and "Emma" in printed and "scale: scores / 1.4142" in printed
    with pytest.raises(LucidError, match="same number of feature columns"):
        ladder.attention_from_qk([[1.0, 2.0]], [[1.0]])
    with pytest.raises(LucidError, match="one row per key"):
        ladder.attention_from_qk(Q, K, V=[[1.0], [2.0]])
    with pytest.raises(LucidError, match="multiple of heads"):
        ladder.multi_head_attention(ladder.JOURNEY, d_out=4, heads=0)


def test_printed_tables_use_the_books_rounding():
    table = ladder.simplified_attention(ladder.JOURNEY).table("context")
    assert " journey   0.4419   0.6515   0.5683" in table


# --- n-grams -------------------------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", ["kneser-ney", "add-k"])
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_ngram_probabilities_sum_to_one_over_the_vocabulary(order, smoothing):
    rng = np.random.default_rng(order)
    tokens = rng.integers(0, 12, 3000)
    tokens[::7] = 3  # some structure, so counts differ
    model = ladder.NGramLM(order, vocab_size=15, smoothing=smoothing).fit([tokens[:2000], tokens[2000:]])
    seen = [tokens[i - length:i].tolist() for i, length in zip(rng.integers(10, 3000, 20), rng.integers(0, 6, 20))]
    unseen = [rng.integers(0, 15, rng.integers(0, 6)).tolist() for _ in range(20)]  # tokens 12-14 never occur
    for history in seen + unseen:
        distribution = model.distribution(history)
        assert distribution.sum() == pytest.approx(1.0, abs=1e-12) and (distribution > 0).all()


def test_ngram_counts_by_hand():
    # "abab" + "ab": bigram counts a->b 3, b->a 1; Kneser-Ney with D = 0.75
    model = ladder.NGramLM(2, vocab_size=2).fit([[0, 1, 0, 1], [0, 1]])
    # P(b | a) = (3 - 0.75) / 3 + 0.75 * 1 / 3 * P_cont(b); P_cont(b) = (1 - .75)/2 + .75 * 2/2 * 1/2
    p_cont_b = (1 - 0.75) / 2 + 0.75 * 2 / 2 * 0.5
    assert model.probability([0], 1) == pytest.approx((3 - 0.75) / 3 + 0.75 / 3 * p_cont_b)
    laplace = ladder.NGramLM(2, vocab_size=2, smoothing="add-k").fit([[0, 1, 0, 1], [0, 1]])
    assert laplace.probability([0], 1) == pytest.approx((3 + 1) / (3 + 2))


def test_ngram_bad_settings_are_one_line_errors():
    with pytest.raises(LucidError, match="n >= 1"):
        ladder.NGramLM(0, 10)
    with pytest.raises(LucidError, match="smoothing"):
        ladder.NGramLM(2, 10, smoothing="good-turing")


# --- rungs ---------------------------------------------------------------------------------------

def test_rungs_parse_and_refuse_unknown_names():
    names = [r.name for r in parse_rungs("ngram:1-3,bigram,gpt")]
    assert names == ["1-gram", "2-gram", "3-gram", "bigram", "gpt"]
    assert [r.name for r in parse_rungs(ladder.DEFAULT_RUNGS)][-1] == "gpt"
    laplace = parse_rungs("ngram:2", smoothing="add-k")[0]
    assert laplace.smoothing == "add-k" and "add-one" in laplace.idea
    for bad, message in [("trigram", "unknown rung"), ("ngram:x", "ngram:N"), ("ngram:0-2", "from 1"),
                         ("ngram:2-", "ngram:N"), ("bag,bag", "twice")]:
        with pytest.raises(LucidError, match=message):
            parse_rungs(bad)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("ladder") / "shk.txt"
    path.write_text((DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[:40000], encoding="utf-8")
    return path


def train_rung(rung_name: str, corpus, out, seed: int = 7):
    values = {**TRAIN_PRESETS["shakespeare-char"], "data": [str(corpus)], "out": str(out), "max_iters": 30,
              "lr_decay_iters": 30, "warmup_iters": 5, "eval_interval": 30, "eval_iters": 2, "seed": seed,
              "sample_tokens": 0, "plot": False, "threads": 2}
    settings = TrainSettings(**{**TrainSettings().to_dict(), **values})
    if rung_name == "gpt":  # the project's Transformer, trained as `lucidlm train` trains it
        trainer = Trainer(settings, PRESETS["shakespeare-char"], force=True)
    else:
        trainer = RungTrainer(settings, PRESETS["shakespeare-char"], NEURAL[rung_name].build, force=True)
    windows = validation_windows(trainer.val_windows.split, 64)
    before = neural_loss(trainer.model, windows)
    trainer.fit()
    trainer.close()
    after = neural_loss(trainer.model, windows)
    return before[0] / before[1], after[0] / after[1]


@pytest.mark.parametrize("rung", list(NEURAL))
def test_every_rung_trains_from_a_seed_and_its_loss_falls(rung, small_corpus, tmp_path):
    before, after = train_rung(rung, small_corpus, tmp_path / "a")
    assert after < before - 0.3, (before, after)
    again = train_rung(rung, small_corpus, tmp_path / "b")
    assert again == (before, after)  # the same seed, the same numbers
    if rung != "gpt":
        assert (tmp_path / "a" / "rung.safetensors").is_file()


def test_the_ladder_command_writes_its_table_json_and_plot(small_corpus, tmp_path, capsys):
    out = tmp_path / "ladder"
    argv = ["ladder", "--data", str(small_corpus), "--out", str(out), "--rungs", "ngram:1-2,bag,gpt",
            "--max-iters", "20", "--threads", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "ladder.json").read_text())
    assert [r["rung"] for r in results["rungs"]] == ["1-gram", "2-gram", "bag", "gpt"]
    for row in results["rungs"]:
        assert row["rung"] in printed and 0 < row["val_loss"] < 6
        assert row["bits_per_char"] == pytest.approx(row["val_loss"] / math.log(2), abs=1e-3)  # characters
        assert len(row["sample"]) == 100 and row["parameters"] > 0
    assert results["rungs"][1]["val_loss"] < results["rungs"][0]["val_loss"]  # bigram counts beat unigram ones
    assert (out / "ladder.png").stat().st_size > 5000
    assert main(argv) == 2  # never over a finished climb without --force
    assert "--force" in capsys.readouterr().err
    # the same seed gives the same table
    assert main(argv + ["--force"]) == 0
    def measured(rows):  # all but the seconds, which the machine decides
        return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]

    assert measured(json.loads((out / "ladder.json").read_text())["rungs"]) == measured(results["rungs"])


def test_the_ladder_command_refuses_bad_input_in_one_line(small_corpus, tmp_path, capsys):
    data = ["--data", str(small_corpus)]
    for argv, message in [(data + ["--rungs", "ngram:1-2,trigram"], "unknown rung"),
                          (data + ["--max-iters", "0"], "max_iters"),
                          (["--data", str(tmp_path / "missing.txt")], "no such file")]:
        code = main(["ladder", "--out", str(tmp_path / "o"), *argv])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing made for a climb that cannot start


def test_a_failing_climb_keeps_the_previous_one(tmp_path, capsys):
    german = tmp_path / "german.txt"
    german.write_text("Köche präferieren süße Schokolädentörtchen.\n" * 400, encoding="utf-8")
    out = tmp_path / "climb"
    assert main(["ladder", "--data", str(german), "--out", str(out), "--rungs", "ngram:1-2", "--tokenizer", "bytes"]) == 0
    before = json.loads((out / "ladder.json").read_text())
    row = before["rungs"][1]  # bytes: a character is 1.13 tokens here, so bits per character are more than per token
    assert row["bits_per_char"] == pytest.approx(row["val_loss"] / math.log(2) * 49 / 43, rel=0.02)
    assert main(["ladder", "--data", str(german), "--out", str(tmp_path / "laplace"), "--rungs", "ngram:1-2",
                 "--tokenizer", "bytes", "--smoothing", "add-k"]) == 0
    laplace = json.loads((tmp_path / "laplace" / "ladder.json").read_text())["rungs"]
    assert "add-one" in laplace[1]["idea"] and laplace[1]["val_loss"] != row["val_loss"]
    capsys.readouterr()
    code = main(["ladder", "--data", str(german), "--out", str(out), "--rungs", "ngram:1-2", "--tokenizer", "ascii",
                 "--force"])
    err = capsys.readouterr().err
    assert code == 2 and "'ö'" in err and len(err.strip().splitlines()) == 1
    assert json.loads((out / "ladder.json").read_text()) == before  # --force deletes only once a climb can start


# --- femto and pico ------------------------------------------------------------------------------

def test_friends_text_is_what_its_script_writes():
    script = runpy.run_path(str(DATA / "friends.py"))
    assert (DATA / "friends.txt").read_text(encoding="utf-8") == script["text"]()


@pytest.mark.parametrize("preset", ["femto", "pico"])
def test_femto_and_pico_learn_words_in_a_plane(preset, tmp_path, capsys):
    run = tmp_path / preset
    assert main(["train", "--preset", preset, "--data", str(DATA / "friends.txt"), "--out", str(run),
                 "--max-iters", "300", "--eval-interval", "300", "--sample-tokens", "0", "--threads", "2"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if "val_loss" in r][-1]
    assert final["val_loss"] < 2.6  # predicting words by frequency alone costs 3.34 nats
    model, tok = lucidlm.load(run)
    assert model.config.d_model == 2 and tok.kind == "words"
    view = look.embeddings_2d(model, tok, tokens=["Emma", "Noah", "games", "tea"])
    assert view.axes == ("dimension 0", "dimension 1")  # the model's own plane, not a projection
    assert torch.allclose(torch.tensor(view.points[0]), model.tok_emb.weight[tok.encode("Emma")[0]].float())
    attention = look.attention(model, tok, "Emma hates games but she is a great friend.")
    assert attention.weights.shape[:2] == (model.config.n_layers, model.config.n_heads)
    capsys.readouterr()
    assert main(["embeddings", "--model", str(run), "--png", str(tmp_path / "plane.png")]) == 0
    assert (tmp_path / "plane.png").stat().st_size > 5000
