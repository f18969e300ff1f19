"""The engine and the text API: cached decoding, stop conditions, seeds, batches, streaming."""

import pytest
import torch

from lucidlm import Config, Tokenizer, Transformer, batch_generate, generate, make_sampler, stream_generate
from lucidlm.errors import LucidError
from lucidlm.generation import PromptCache, generate_tokens



pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(scope="module")
def tokenizer(shakespeare):
    return Tokenizer.train(shakespeare[:100000], 512, pattern="gpt2", special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    m = Transformer(Config(vocab_size=tokenizer.vocab_size, context_length=96, d_model=48, n_layers=2, n_heads=4,
                           n_kv_heads=2, d_ff=96)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


class ScriptedModel(torch.nn.Module):
    """Emits a fixed sequence of tokens, whatever the input: for exact streaming tests."""

    def __init__(self, script, vocab_size):
        super().__init__()
        self.config = Config(vocab_size=vocab_size, context_length=512, d_model=8, n_layers=1, n_heads=1)
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.script, self.step = list(script), 0

    def forward(self, ids, cache=None, logits_for="all", **_):
        logits = torch.full((ids.shape[0], 1, self.config.vocab_size), -10.0)
        logits[:, 0, self.script[min(self.step, len(self.script) - 1)]] = 10.0
        self.step += 1
        return logits


def test_engine_greedy_tokens_equal_argmax_of_a_full_forward(model):
    prompt = [10, 20, 30, 40]
    stream = generate_tokens(model, prompt)
    tokens = [next(stream)[0] for _ in range(15)]
    ids = list(prompt)
    for _ in range(15):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert tokens == ids[len(prompt):]


def test_logprobs_are_the_log_softmax_of_the_logits(model):
    prompt = [10, 20, 30]
    token, logprobs = next(generate_tokens(model, prompt))
    expected = model(torch.tensor([prompt]))[0, -1].log_softmax(-1)
    torch.testing.assert_close(logprobs, expected, atol=1e-5, rtol=1e-5)


def test_stream_generate_reports_everything(model, tokenizer):
    responses = list(stream_generate(model, tokenizer, "To be", max_tokens=6))
    assert len(responses) == 6
    assert [r.finish_reason for r in responses] == [None] * 5 + ["length"]
    last = responses[-1]
    assert last.prompt_tokens == len(tokenizer.encode("To be")) and last.generation_tokens == 6
    assert last.prompt_tps > 0 and last.generation_tps > 0 and last.logprobs.shape == (tokenizer.vocab_size,)
    assert "".join(r.text for r in responses) == generate(model, tokenizer, "To be", max_tokens=6)


def test_a_seed_reproduces_sampled_generation(model, tokenizer):
    sampler = make_sampler(temp=1.0)
    a = generate(model, tokenizer, "To be", max_tokens=20, sampler=sampler, seed=3)
    b = generate(model, tokenizer, "To be", max_tokens=20, sampler=sampler, seed=3)
    c = generate(model, tokenizer, "To be", max_tokens=20, sampler=sampler, seed=4)
    assert a == b and a != c


def test_eos_stops_and_is_not_emitted(tokenizer):
    hello = tokenizer.encode("Hello there")
    eos = tokenizer.eos_token_id
    model = ScriptedModel(hello + [eos, 7, 7], tokenizer.vocab_size)
    responses = list(stream_generate(model, tokenizer, [1, 2], max_tokens=50))
    assert responses[-1].finish_reason == "stop" and responses[-1].token == eos
    assert "".join(r.text for r in responses) == "Hello there"


def test_a_stop_string_split_across_tokens_stops_and_is_not_printed(tokenizer):
    text = "the cat sat on the mat and then"
    ids = tokenizer.encode(text)
    # find a stop string that starts inside one token and ends inside the next
    pieces = [tokenizer.decode([i]) for i in ids]
    k = next(i for i in range(len(pieces) - 1) if len(pieces[i]) > 1 and len(pieces[i + 1]) > 1)
    start = len("".join(pieces[:k])) + len(pieces[k]) - 1
    stop = text[start:start + 2]
    model = ScriptedModel(ids + [5] * 10, tokenizer.vocab_size)
    responses = list(stream_generate(model, tokenizer, [1], max_tokens=50, stop=[stop]))
    out = "".join(r.text for r in responses)
    assert responses[-1].finish_reason == "stop"
    assert out == text[:text.index(stop)] and stop not in out


def test_a_streamed_emoji_never_appears_broken(smollm_tokenizer):
    ids = smollm_tokenizer.encode("ok 👨\u200d👩\u200d👧\u200d👦 🙂 done")
    model = ScriptedModel(ids, smollm_tokenizer.vocab_size)
    pieces = [r.text for r in stream_generate(model, smollm_tokenizer, [1], max_tokens=len(ids))]
    assert "".join(pieces) == "ok 👨\u200d👩\u200d👧\u200d👦 🙂 done"
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces  # some tokens completed no character and were held back


def test_prompt_cache_prefills_only_the_new_suffix(model):
    cache = PromptCache(model)
    first = list(range(10, 30))
    cache.prefill(first)
    assert cache.last_prefill == 20
    logits = cache.prefill(first + [31, 32, 33])
    assert cache.last_prefill == 3 and cache.reused == 20
    torch.testing.assert_close(logits, model(torch.tensor([first + [31, 32, 33]]))[0, -1], atol=1e-5, rtol=1e-5)
    cache.prefill(first[:12] + [99])  # diverges: rolls back to the common prefix
    assert cache.reused == 12 and cache.last_prefill == 1
    cache.prefill(first[:12] + [99])  # identical: recomputes only the last token
    assert cache.last_prefill == 1


def test_prompt_longer_than_the_context_is_a_clear_error(model, tokenizer):
    with pytest.raises(LucidError, match="context"):
        generate(model, tokenizer, list(range(100)), max_tokens=5)


def test_generation_stops_at_the_context_end(model, tokenizer):
    responses = list(stream_generate(model, tokenizer, list(range(90)), max_tokens=50))
    assert len(responses) == 96 - 90 and responses[-1].finish_reason == "length"


@pytest.mark.parametrize("bad", [dict(max_tokens=0), dict(prompt="")])
def test_bad_requests(model, tokenizer, bad):
    with pytest.raises(LucidError):
        generate(model, tokenizer, bad.get("prompt", "x"), max_tokens=bad.get("max_tokens", 5))


def test_batch_generation_equals_generating_each_prompt_alone(model, tokenizer):
    prompts = ["To be", "Now is the winter of our", "O"]
    batched = batch_generate(model, tokenizer, prompts, max_tokens=12)
    alone = [generate(model, tokenizer, p, max_tokens=12) for p in prompts]
    assert batched == alone


def test_batch_rows_finish_independently(tokenizer):
    class TwoRows(ScriptedModel):
        def forward(self, ids, cache=None, logits_for="all", **_):
            logits = torch.full((2, 1, self.config.vocab_size), -10.0)
            logits[0, 0, self.script[0]] = 10.0
            logits[1, 0, tokenizer.eos_token_id if self.step >= 2 else self.script[0]] = 10.0
            self.step += 1
            return logits

    a = tokenizer.encode("a")[0]
    model = TwoRows([a], tokenizer.vocab_size)
    out = batch_generate(model, tokenizer, [[1, 2], [3]], max_tokens=5)
    assert out == ["a" * 5, "a" * 2]


def test_sliding_window_model_generates_past_its_context():
    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=64, context_length=16, d_model=32, n_layers=2, n_heads=2,
                               sliding_window=8)).eval()
    cache = PromptCache(model)
    assert cache.sliding
    stream = generate_tokens(model, [1, 2, 3], cache)
    tokens = [next(stream)[0] for _ in range(40)]
    assert len(tokens) == 40 and len(cache.tokens) == 42


def test_a_batch_with_settings_per_row_streams_what_each_prompt_streams_alone(model, tokenizer):
    from lucidlm import GenerationSettings, stream_batch_generate

    prompts = ["To be", "Now is the winter of our", "O"]
    settings = [GenerationSettings(max_tokens=12),
                GenerationSettings(temperature=0.9, top_p=0.95, seed=5, max_tokens=20, stop=("e",)),
                GenerationSettings(temperature=1.3, top_k=20, seed=7, max_tokens=7, repetition_penalty=1.2)]
    batched = {row: [] for row in range(3)}
    for response in stream_batch_generate(model, tokenizer, prompts, settings):
        batched[response.row].append((response.token, response.text, response.finish_reason))
    for row, (prompt, row_settings) in enumerate(zip(prompts, settings)):
        alone = [(r.token, r.text, r.finish_reason)
                 for r in stream_generate(model, tokenizer, prompt, settings=row_settings)]
        assert batched[row] == alone, row
    assert batched[1][-1][2] == "stop" and len(batched[1]) < 20  # its stop string ended it early
    assert [len(batched[0]), len(batched[2])] == [12, 7] and batched[2][-1][2] == "length"


def test_batch_generate_collects_the_streamed_rows(model, tokenizer):
    from lucidlm import GenerationSettings, stream_batch_generate

    prompts = ["To be", "O"]
    settings = GenerationSettings(temperature=1.0, seed=2, max_tokens=9)
    texts = ["", ""]
    for response in stream_batch_generate(model, tokenizer, prompts, settings):
        texts[response.row] += response.text
    assert batch_generate(model, tokenizer, prompts, settings=settings) == texts
    assert batch_generate(model, tokenizer, prompts, max_tokens=3) == [generate(model, tokenizer, p, max_tokens=3)
                                                                       for p in prompts]


def test_a_batch_that_fills_the_context_shifts_every_row_it_can(tokenizer):
    """overflow=shift in a batch: when the longest row fills the context, each row keeps the
    newer half of it, and a row shorter than that half keeps all it has."""
    from lucidlm import GenerationSettings, stream_batch_generate
    from lucidlm.generation.engine import PromptCache

    torch.manual_seed(0)
    model = Transformer(Config(vocab_size=tokenizer.vocab_size, context_length=32, d_model=32, n_layers=2,
                               n_heads=2)).eval()
    cache = PromptCache(model, batch_size=2)
    cache.prefill_rows([list(range(1, 26)), [7, 8, 9]])
    for _ in range(7):
        cache.step_rows([5, 6])
    assert cache.room() == 0 and [len(r) for r in cache.rows] == [32, 10]
    cache.shift([1, 2])
    assert cache.rows[0] == ([*range(1, 26)] + [5] * 7)[-15:] + [1]
    assert cache.rows[1] == [7, 8, 9] + [6] * 7 + [2]
    responses = list(stream_batch_generate(model, tokenizer, [[1] * 25, [2] * 3],
                                           GenerationSettings(max_tokens=20, overflow="shift")))
    assert [sum(r.row == row for r in responses) for row in (0, 1)] == [20, 20]


def _alone(model, prompt, n):
    stream = generate_tokens(model, prompt)
    return [next(stream)[0] for _ in range(n)]


def test_rows_that_join_a_running_batch_generate_what_they_generate_alone(model):
    """Continuous batching: rows join between steps (longer and shorter than the batch's cache),
    leave when done, and each gets exactly its greedy tokens alone."""
    from lucidlm.generation import TokenEngine

    prompts = {"a": [5, 6, 7], "b": list(range(30, 52)), "c": [9], "d": list(range(60, 70))}
    wanted = {"a": 14, "b": 6, "c": 12, "d": 5}
    engine = TokenEngine(model, [], [], [], [])
    joins_at = {0: ["a"], 3: ["b"], 5: ["c"], 9: ["d"]}  # step -> names joining before it
    names, got = {}, {name: [] for name in prompts}
    for step in range(40):
        for name in joins_at.get(step, []):
            names[engine.add(prompts[name])] = name
        for row, token, _ in engine.step():
            name = names[row]
            got[name].append(token)
            if len(got[name]) == wanted[name]:
                engine.finish(row)
        if step > 9 and not engine.rows_running:
            break
    assert engine.cache.cache.batch_size == 0 or all(r in engine.finished for r in engine.active)
    for name, prompt in prompts.items():
        assert got[name] == _alone(model, prompt, wanted[name]), name


def test_a_row_copied_out_of_a_padded_batch_continues_like_the_original(model):
    """take_row keeps a finished request's prefix; a prompt that extends it reuses that prefix."""
    from lucidlm.generation import TokenEngine

    engine = TokenEngine(model, [[1, 2, 3, 4, 5, 6, 7, 8], [11, 12]], [None, None], [(), ()], [None, None])
    for _ in range(4):
        engine.step()
    slot = engine.row_slot(1)
    kept = PromptCache.holding(model, engine.cache.cache.take_row(slot), engine.cache.rows[slot])
    assert kept.tokens[:2] == [11, 12] and len(kept.tokens) == 2 + 3
    longer = kept.tokens + [40, 41]
    logits = kept.prefill(longer)
    assert kept.reused == 5 and kept.last_prefill == 2
    torch.testing.assert_close(logits, model(torch.tensor([longer]))[0, -1], rtol=1e-5, atol=1e-5)


def test_when_a_long_row_leaves_the_batch_cache_shrinks_to_the_longest_row_left(model):
    """Rows end at the cache's last slot, so dropping the padding a long row leaves behind keeps the
    cache as long as its longest row: a server's rows never outgrow the context together."""
    from lucidlm.generation import TokenEngine

    engine = TokenEngine(model, [], [], [], [])
    long_row = engine.add(list(range(1, 61)))
    engine.step()
    short_row = engine.add([3, 4])
    engine.step()
    assert engine.cache.cache.length == 61 and engine.cache.rows[engine.row_slot(short_row)] == [3, 4]
    engine.finish(long_row)
    engine.step()
    assert engine.cache.cache.length == len(engine.cache.rows[0]) == 3


def test_a_row_finished_before_it_joins_is_never_computed(model):
    from lucidlm.generation import TokenEngine

    engine = TokenEngine(model, [[1, 2, 3]], [None], [()], [None])
    engine.step()
    gone = engine.add([4, 5, 6])
    engine.finish(gone)  # its client went away while it waited to join
    assert engine.rows_running == 1
    rows = [row for row, _, _ in engine.step()]
    assert rows == [0] and engine.cache.cache.batch_size == 1 and gone not in engine.prompts


def test_a_joined_rows_padding_is_invisible_and_zero(model):
    """Padding slots are masked and hold zeros, never stale memory (0 weight x NaN is NaN)."""
    long, short = PromptCache(model), PromptCache(model)
    long.prefill([1, 2, 3, 4, 5, 6])
    short.prefill([7, 8])
    long.append(short)
    cache = long.cache
    assert cache.length == 6 and cache.batch_size == 2 and long.rows == [[1, 2, 3, 4, 5, 6], [7, 8]]
    assert not cache.valid[1, :4].any() and cache.valid[1, 4:6].all() and cache.valid[0, :6].all()
    assert cache.positions[1, 4:6].tolist() == [0, 1] and cache.next_position.tolist() == [6, 2]
    for t in cache.keys + cache.values:
        assert t[1, :, :4].eq(0).all()
