"""Evaluation: score and rolling log-likelihood equal transformers' (tiny models and SmolLM2),
task files and prompts render exactly, acc/acc_norm match an independent computation, the CLI's
errors are one line, and lm_eval gives the same acc/acc_norm with the lucidlm and hf backends."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

import lucidlm
from lucidlm import Tokenizer
from lucidlm.cli import main as cli_main
from lucidlm.errors import LucidError
from lucidlm.evaluate import (evaluate, read_task, render, rolling_loglikelihood, score, score_batch,
                              text_perplexity)
from lucidlm.evaluate.tasks import draw_examples

from conftest import ROOT, make_tiny_hf_model

pytestmark = pytest.mark.usefixtures("inference_only")


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --- the oracles: transformers' log-probabilities, computed the plain way ---------------------------

def hf_score(hf, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    ids = torch.tensor([context + continuation])
    logprobs = hf(ids).logits[0, len(context) - 1:-1].float().log_softmax(-1)  # (n, V)
    target = torch.tensor(continuation)
    return float(logprobs.gather(1, target[:, None]).double().sum()), bool((logprobs.argmax(-1) == target).all())


def hf_strided(hf, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    """https://huggingface.co/docs/transformers/perplexity, summed instead of averaged."""
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + window, len(ids))
        trg_len = end - prev_end
        input_ids = torch.tensor([ids[begin:end]])
        labels = input_ids.clone()
        labels[:, :-trg_len] = -100
        logits = hf(input_ids).logits[0, :-1].float()
        shifted = labels[0, 1:]
        keep = shifted != -100
        total += float(logits[keep].log_softmax(-1).gather(1, shifted[keep][:, None]).double().sum())
        count += int(keep.sum())
        prev_end = end
        if end == len(ids):
            break
    return total, count


def random_pairs(n: int, vocab: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randint(1, 20))],
             [rng.randrange(vocab) for _ in range(rng.randint(1, 6))]) for _ in range(n)]


# --- tiny models: fast parity ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("padding", ["right", "left"])
def test_score_batch_equals_transformers_on_a_tiny_model(hf_models, family, padding):
    hf, folder = hf_models[family]
    model, _ = lucidlm.load(folder, dtype="float32")
    pairs = random_pairs(20, hf.config.vocab_size, seed=1)
    ours = score_batch(model, pairs, batch_size=6, padding=padding)  # several batches, each padded
    for (context, continuation), mine in zip(pairs, ours):
        logprob, greedy = hf_score(hf, context, continuation)
        assert relative(mine.logprob, logprob) < 1e-4, (mine, logprob)
        assert mine.is_greedy == greedy
    assert score(model, *pairs[0]) == pytest.approx(tuple(ours[0]), rel=1e-5)


def test_a_greedy_continuation_is_reported_greedy(hf_models):
    hf, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder, dtype="float32")
    context = [5, 17, 3]
    greedy = [int(hf(torch.tensor([context])).logits[0, -1].argmax())]
    assert score(model, context, greedy).is_greedy
    other = (greedy[0] + 1) % hf.config.vocab_size
    assert not score(model, context, [other]).is_greedy


def test_a_long_pair_keeps_its_newest_tokens(hf_models):
    hf, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder, dtype="float32")
    limit = model.config.context_length  # 64
    context, continuation = list(range(1, 91)), [7, 8, 9]
    kept = (context + continuation)[-(limit + 1):]
    logprob, _ = hf_score(hf, kept[:-3], continuation)
    assert relative(score(model, context, continuation).logprob, logprob) < 1e-4


@pytest.mark.parametrize("window,stride", [(32, 12), (64, 63), (16, 1)])
def test_rolling_loglikelihood_equals_hf_strided_perplexity(hf_models, window, stride):
    hf, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder, dtype="float32")
    ids = [random.Random(3).randrange(hf.config.vocab_size) for _ in range(150)]
    ours = rolling_loglikelihood(model, ids, window, stride)
    total, count = hf_strided(hf, ids, window, stride)
    assert ours.tokens == count == len(ids) - 1  # every token after the first, once
    assert relative(ours.logprob, total) < 1e-4


def test_rolling_and_score_errors_are_one_line(hf_models):
    _, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder, dtype="float32")
    for call, words in [(lambda: rolling_loglikelihood(model, list(range(10)), 16, 16), "--stride"),
                        (lambda: rolling_loglikelihood(model, list(range(10)), 65, 8), "--window"),
                        (lambda: rolling_loglikelihood(model, [1], 16, 8), "at least 2 tokens"),
                        (lambda: score(model, [], [1]), "context is empty"),
                        (lambda: score(model, [1], []), "continuation is empty"),
                        (lambda: score(model, [1], list(range(65))), "more than the model's context")]:
        with pytest.raises(LucidError, match=words) as caught:
            call()
        assert "\n" not in str(caught.value)


# --- a tiny model with a tokenizer: the harness and the CLI --------------------------------------------

TEXT = ("What is the capital of France? Paris. The opposite of hot is cold. Question: Answer: "
        "Berlin Rome Madrid Lisbon big small fast slow went ate saw took ") * 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, checkpoint folder): a 2-layer llama with a 300-token byte-level BPE."""
    tokenizer = Tokenizer.train(TEXT, vocab_size=300)
    hf = make_tiny_hf_model("llama", seed=4, vocab_size=300, max_position_embeddings=256)
    folder = tmp_path_factory.mktemp("hf-tiny")
    hf.save_pretrained(folder)
    model, _ = lucidlm.load(folder, dtype="float32")
    checkpoint = lucidlm.save(model, tokenizer, tmp_path_factory.mktemp("tiny") / "model")
    return model, tokenizer, checkpoint, hf


def write_task(path, items, description=None):
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    if description is not None:
        path.with_name(path.stem + ".description.txt").write_text(description + "\n")
    return path


CAPITALS = [{"question": "What is the capital of France?", "choices": ["Paris", "Lyon", "Nice"], "answer": 0},
            {"question": "What is the capital of Italy?", "choices": ["Milan", "Rome"], "answer": 1},
            {"question": "What is the capital of Spain?", "choices": ["Madrid", "Seville", "Bilbao"], "answer": 0},
            {"question": "What is the capital of Portugal?", "choices": ["Porto", "Faro", "Lisbon"], "answer": 2},
            {"question": "What is the capital of Germany?", "choices": ["Bonn", "Berlin"], "answer": 1}]


def test_prompts_render_exactly_for_zero_one_and_few_shots(tmp_path):
    task = read_task(write_task(tmp_path / "caps.jsonl", CAPITALS, "Capitals of countries."))
    assert render(task, 0, 0, seed=0).text == "Capitals of countries.\n\nQuestion: What is the capital of France?\nAnswer:"
    one = render(task, 0, 1, seed=0)
    (example,) = one.examples
    assert one.text == ("Capitals of countries.\n\n"
                        f"Question: {CAPITALS[example]['question']}\n"
                        f"Answer: {CAPITALS[example]['choices'][CAPITALS[example]['answer']]}\n\n"
                        "Question: What is the capital of France?\nAnswer:")
    assert one.continuation("Paris") == " Paris"
    few = render(task, 2, 3, seed=5)
    blocks = few.text.split("\n\n")
    assert blocks[0] == "Capitals of countries." and len(blocks) == 5
    assert blocks[1:4] == [f"Question: {CAPITALS[i]['question']}\nAnswer: {CAPITALS[i]['choices'][CAPITALS[i]['answer']]}"
                           for i in few.examples]


def test_examples_never_include_the_query_and_follow_the_seed(tmp_path):
    task = read_task(write_task(tmp_path / "caps.jsonl", CAPITALS))
    for query in range(len(CAPITALS)):
        assert sorted(draw_examples(task, query, 4, seed=0)) == [i for i in range(5) if i != query]
        for shots in (1, 2, 3):
            drawn = draw_examples(task, query, shots, seed=7)
            assert query not in drawn and len(set(drawn)) == shots
            assert drawn == draw_examples(task, query, shots, seed=7)
    seeds = {tuple(draw_examples(task, 0, 2, seed=s)) for s in range(20)}
    assert len(seeds) > 1  # the seed does choose
    with pytest.raises(LucidError, match="5 shots need 6 items"):
        draw_examples(task, 0, 5, seed=0)


def test_a_chat_prompt_is_the_tokenizers_template_with_one_turn_per_example(tmp_path, tiny):
    _, tokenizer, _, _ = tiny
    task = read_task(write_task(tmp_path / "caps.jsonl", CAPITALS, "Capitals."))
    prompt = render(task, 1, 2, seed=0, tokenizer=tokenizer, chat=True)
    a, b = prompt.examples
    expected = [{"role": "system", "content": "Capitals."},
                {"role": "user", "content": CAPITALS[a]["question"]},
                {"role": "assistant", "content": CAPITALS[a]["choices"][CAPITALS[a]["answer"]]},
                {"role": "user", "content": CAPITALS[b]["question"]},
                {"role": "assistant", "content": CAPITALS[b]["choices"][CAPITALS[b]["answer"]]},
                {"role": "user", "content": CAPITALS[1]["question"]}]
    assert list(prompt.messages) == expected
    assert prompt.text == tokenizer.apply_chat_template(expected, add_generation_prompt=True, tokenize=False)
    assert prompt.continuation("Rome") == "Rome"


def test_acc_and_acc_norm_equal_an_independent_computation(tmp_path, tiny):
    model, tokenizer, _, hf = tiny
    task = read_task(write_task(tmp_path / "caps.jsonl", CAPITALS, "Capitals."))
    result = evaluate(model, tokenizer, task, shots=0)
    right = right_norm = 0
    for item, got in zip(CAPITALS, result.items):
        context = f"Capitals.\n\nQuestion: {item['question']}\nAnswer:"
        lls = []
        for choice in item["choices"]:
            context_ids = tokenizer.encode(context)
            continuation_ids = tokenizer.encode(context + " " + choice)[len(context_ids):]
            lls.append(hf_score(hf, context_ids, continuation_ids)[0])
        norms = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        assert [s.logprob for s in got.scores] == pytest.approx(lls, rel=1e-4)
        right += max(range(len(lls)), key=lls.__getitem__) == item["answer"]
        right_norm += max(range(len(norms)), key=norms.__getitem__) == item["answer"]
    assert result.metrics == {"acc": right / 5, "acc_norm": right_norm / 5}


def test_generation_tasks_score_greedy_text_up_to_the_stop_string(tmp_path, tiny):
    model, tokenizer, _, _ = tiny
    items = [{"prompt": "go", "target": "went", "stop": "\n"}, {"prompt": "eat", "target": "ate"}]
    task = read_task(write_task(tmp_path / "past.jsonl", items))
    result = evaluate(model, tokenizer, task, shots=1, max_tokens=8)
    for item, got in zip(items, result.items):
        expected = lucidlm.generate(model, tokenizer, tokenizer.encode(got.prompt.text), max_tokens=8, stop=["\n"])
        assert got.generated == expected
        assert got.exact_match == (expected.strip() == item["target"])
    assert result.metrics == {"exact_match": sum(r.exact_match for r in result.items) / 2}


def test_eval_run_prints_a_table_and_shown_prompts_with_each_choices_score(tmp_path, tiny, capsys):
    model, tokenizer, checkpoint, _ = tiny
    path = write_task(tmp_path / "caps.jsonl", CAPITALS, "Capitals.")
    code = cli_main(["eval", "run", "--model", str(checkpoint), "--tasks", str(path), "--shots", "0,2",
                     "--show", "1", "--seed", "3"])
    out = capsys.readouterr().out
    assert code == 0
    zero = evaluate(model, tokenizer, read_task(path), 0, seed=3)
    two = evaluate(model, tokenizer, read_task(path), 2, seed=3)
    assert out.count("--- caps, ") == 2
    assert render(read_task(path), 0, 2, seed=3).text in out
    item = zero.items[0]
    for choice, s, norm in zip(item.choices, item.scores, item.per_char):
        line = next(line for line in out.splitlines() if line[4:].startswith(choice + " "))
        assert f"{s.logprob:.4f}" in line and f"{norm:.4f}" in line
        assert line.startswith("  *") == (choice == "Paris")
        assert ("acc" in line.split("<-")[-1]) == (item.chosen == item.choices.index(choice) or
                                                  item.chosen_norm == item.choices.index(choice))
    table = out.strip().splitlines()[-3:]
    assert table[0].split() == ["task", "shots", "n", "acc", "acc_norm", "exact_match"]
    for row, result, shots in zip(table[1:], (zero, two), (0, 2)):
        assert row.split() == ["caps", str(shots), "5", f"{result.metrics['acc']:.3f}",
                               f"{result.metrics['acc_norm']:.3f}", "-"]


def test_eval_perplexity_prints_the_figures(tmp_path, tiny, capsys):
    model, tokenizer, checkpoint, _ = tiny
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    code = cli_main(["eval", "perplexity", "--model", str(checkpoint), "--data", str(data), "--window", "64",
                     "--stride", "16", "--max-tokens", "200", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    expected = text_perplexity(model, tokenizer, TEXT, 64, 16, 200)
    assert expected.rolling.tokens == 199
    assert f"perplexity        {expected.rolling.perplexity:.4f}" in out
    assert f"nats/token        {expected.rolling.nats_per_token:.4f}" in out
    assert f"bits per byte     {expected.bits_per_byte:.4f}" in out
    assert "199 scored of 200 read" in out
    scored_text = tokenizer.decode(tokenizer.encode(TEXT)[1:200])
    assert expected.bytes == len(scored_text.encode())


@pytest.mark.parametrize("lines,message", [
    (['{"question": "q", "choices": ["a", "b"], "answer": 0}', '{"question": "q", "choices": ["a"'],
     r"caps.jsonl:2: not valid JSON"),
    (['{"question": "q", "choices": ["a", "b"], "answer": 2}'], r"caps.jsonl:1: answer index 2 is out of range for 2"),
    (['{"question": "q", "choices": ["a", "b"], "answer": "a"}'], r"caps.jsonl:1: 'answer' must be the index"),
    (['{"question": "q", "choices": ["a", "b"], "anwser": 0}'], r"caps.jsonl:1: missing answer; unknown anwser"),
    (['{"question": "q", "choices": ["a", "b"], "answer": 0}', "", '{"prompt": "p", "target": "t"}'],
     r"caps.jsonl:3: a task file holds one kind"),
    (['{"prompt": "p", "target": "t", "stop": [""]}'], r"caps.jsonl:1: 'stop' must be"),
    (["[1, 2]"], r"caps.jsonl:1: expected a JSON object"),
    ([""], r"caps.jsonl: no task items"),
])
def test_bad_task_files_are_one_line_errors_with_the_line_number(tmp_path, tiny, capsys, lines, message):
    _, _, checkpoint, _ = tiny
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert cli_main(["eval", "run", "--model", str(checkpoint), "--tasks", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lucidlm: error: ")
    assert __import__("re").search(message, err), err


@pytest.mark.parametrize("argv,message", [
    (["eval", "run", "--tasks", "{missing}"], "cannot read"),
    (["eval", "run", "--tasks", "{caps}", "--shots", "0,5"], "5 shots need 6 items, but the task has 5"),
    (["eval", "run", "--tasks", "{caps}", "--shots", "one"], "--shots takes counts"),
    (["eval", "run", "--tasks", "{caps}", "--limit", "0"], "--limit must be at least 1"),
    (["eval", "perplexity", "--data", "{missing}"], "cannot read"),
    (["eval", "perplexity", "--data", "{caps}", "--window", "32", "--stride", "32"], "--stride must be"),
    (["eval", "perplexity", "--data", "{caps}", "--window", "9999"], "--window must be between 2 and"),
    (["eval", "perplexity", "--data", "{caps}", "--max-tokens", "1"], "--max-tokens must be at least 2"),
])
def test_cli_mistakes_are_one_line_with_exit_status_2(tmp_path, tiny, capsys, argv, message):
    _, _, checkpoint, _ = tiny
    caps = write_task(tmp_path / "caps.jsonl", CAPITALS)
    argv = [a.format(missing=tmp_path / "nope.jsonl", caps=caps) for a in argv]
    assert cli_main([*argv, "--model", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_model_without_a_tokenizer_is_refused(hf_models, capsys, tmp_path):
    _, folder = hf_models["llama"]
    caps = write_task(tmp_path / "caps.jsonl", CAPITALS)
    assert cli_main(["eval", "run", "--model", str(folder), "--tasks", str(caps)]) == 2
    assert "has no tokenizer" in capsys.readouterr().err


def test_shipped_tasks_read_and_are_what_their_readme_says():
    for name, kind, n in [("capitals", "multiple_choice", 42), ("antonyms", "multiple_choice", 32),
                          ("past_tense", "generation", 40)]:
        task = read_task(ROOT / "tasks" / f"{name}.jsonl")
        assert (task.kind, len(task.items)) == (kind, n) and task.description
        assert len({item.question for item in task.items}) == n  # no duplicate queries
        if kind == "multiple_choice":
            assert all(len(set(item.choices)) == len(item.choices) == 4 for item in task.items)


# --- the real SmolLM2 file (slow) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(smollm_path):
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.AutoModelForCausalLM.from_pretrained(smollm_path.parent, gguf_file=smollm_path.name,
                                                             dtype=torch.float32).eval()


@pytest.mark.slow
def test_score_equals_transformers_on_the_default_model(smollm, reference, shakespeare):
    model, tokenizer = smollm
    ids = tokenizer.encode(shakespeare[:20000])
    rng = random.Random(14)
    pairs = []
    for _ in range(20):  # context 5-60 tokens, continuation 1-12: padded batches of different lengths
        start, n_context, n_continuation = rng.randrange(3000), rng.randint(5, 60), rng.randint(1, 12)
        pairs.append((ids[start:start + n_context], ids[start + n_context:start + n_context + n_continuation]))
    ours = score_batch(model, pairs, batch_size=8)
    worst = 0.0
    for (context, continuation), mine in zip(pairs, ours):
        logprob, greedy = hf_score(reference, context, continuation)
        worst = max(worst, relative(mine.logprob, logprob))
        assert mine.is_greedy == greedy
    assert worst < 1e-4, worst
    assert any(s.is_greedy for s in ours) and not all(s.is_greedy for s in ours)  # both cases were compared


PERPLEXITY_TOKENS = 3000  # bench/eval_perplexity.py measures the 50,000


@pytest.mark.slow
def test_perplexity_on_shakespeare_equals_transformers_with_the_same_stride(smollm, reference, shakespeare):
    model, tokenizer = smollm
    result = text_perplexity(model, tokenizer, shakespeare, window=1024, stride=512, max_tokens=PERPLEXITY_TOKENS)
    ids = tokenizer.encode(shakespeare)[:PERPLEXITY_TOKENS]
    total, count = hf_strided(reference, ids, 1024, 512)
    assert result.rolling.tokens == count == PERPLEXITY_TOKENS - 1
    assert relative(result.rolling.logprob, total) < 1e-4


def lm_eval_results(model: str, model_args: str) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lucidlm.evaluate.lm_eval_backend  # noqa: F401  registers "lucidlm"

    results = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=["lucidlm_capitals"],
                                      task_manager=TaskManager(include_path=str(ROOT / "tasks"), include_defaults=False),
                                      bootstrap_iters=0, log_samples=False)
    return results["results"]["lucidlm_capitals"]


@pytest.mark.slow
def test_lm_eval_gives_the_same_acc_with_the_lucidlm_and_hf_backends(smollm_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the task YAML names its data relative to the repository root
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ours = lm_eval_results("lucidlm", f"model={smollm_path}")
    theirs = lm_eval_results("hf", f"pretrained={smollm_path.parent},gguf_file={smollm_path.name},dtype=float32,device=cpu")
    assert ours["sample_len"] == theirs["sample_len"] == 42
    assert (ours["acc,none"], ours["acc_norm,none"]) == (theirs["acc,none"], theirs["acc_norm,none"])
    assert 0.5 < ours["acc,none"] < 1.0  # a real figure, neither chance nor a constant


@pytest.mark.slow
def test_lm_eval_command_runs_the_lucidlm_backend(tiny, tmp_path):
    """The documented command: `python -m lucidlm.evaluate.lm_eval_backend` is `lm_eval` with the
    backend registered; its sample scores are lucidlm's."""
    model, tokenizer, checkpoint, _ = tiny
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "lucidlm.evaluate.lm_eval_backend", "--model", "lucidlm",
                          "--model_args", f"model={checkpoint}", "--tasks", "lucidlm_capitals", "--include_path",
                          "tasks/", "--limit", "3", "--log_samples", "--output_path", str(tmp_path / "out")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "lucidlm_capitals" in out.stdout and "acc_norm" in out.stdout
    (samples,) = list((tmp_path / "out").rglob("samples_lucidlm_capitals_*.jsonl"))
    first = json.loads(samples.read_text().splitlines()[0])
    context, continuation = first["arguments"]["gen_args_0"]["arg_0"], first["arguments"]["gen_args_0"]["arg_1"]
    ids = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    expected = score(model, context_ids, ids[len(context_ids):]).logprob
    assert float(first["resps"][0][0][0]) == pytest.approx(expected, rel=1e-5)  # the samples file holds strings


def test_the_lm_eval_backend_rolls_and_generates_as_lucidlm_does(tiny):
    """loglikelihood_rolling and generate_until, called as lm_eval calls them, against lucidlm's own
    scoring and generation of the same tokens."""
    from lm_eval.api.instance import Instance

    from lucidlm.evaluate.lm_eval_backend import LucidLM
    from lucidlm.generation import batch_generate

    model, tokenizer, checkpoint, _ = tiny
    backend = LucidLM(model=str(checkpoint))
    text = "The opposite of hot is cold. What is the capital of France? Paris."
    (rolled,) = backend.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    # a text shorter than the context is one window: every token after lm-eval's prefix token
    assert rolled == pytest.approx(score(model, [backend.prefix_token_id], tokenizer.encode(text)).logprob, rel=1e-5)
    prompt = "Question: What is the capital of France?"
    (written,) = backend.generate_until([Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 12}),
                                                  0)])
    (expected,) = batch_generate(model, tokenizer, [tokenizer.encode(prompt)], max_tokens=12, stop=["\n"])
    assert written == expected and "\n" not in written
