"""The HTTP server: OpenAI's API over the scheduler, the web page, health and metrics.

Starlette (the small ASGI toolkit FastAPI is built on) routes the requests and uvicorn serves
them. FastAPI would add pydantic models whose 422 errors are not OpenAI's error shape; the
protocol module checks every field itself, with the rules the CLI uses. Handlers run on the event
loop and never touch the model: they parse, submit a job to the scheduler's worker thread and
turn its events into JSON or server-sent events.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import socket
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import LucidError
from ..generation.text import check_generates, prompt_ids
from ..look import attention
from ..model import KVCache
from .metrics import Metrics
from .protocol import (ApiError, Sampling, lucid_error, parse_attention, parse_chat, parse_completion,
                       parse_embedding)
from .scheduler import Event, GenerationJob, Outbox, Scheduler

PAGE = Path(__file__).with_name("page.html")
ATTENTION_LIMIT = 512  # tokens the page's attention view reads (all layers' weights are kept at once)
SCORE_CHUNK = 256  # prompt tokens per forward when scoring a prompt (bounds the logits' memory)


@dataclass
class ServerOptions:
    name: str = "default"  # the model's id in /v1/models ("default" is always accepted too)
    api_key: str | None = None
    max_batch: int = 8
    max_queue: int = 256
    timeout: float = 600.0  # seconds a request may wait and run
    max_body: int = 1 << 20  # bytes
    prompt_cache_tokens: int = 4096
    cors_origins: tuple[str, ...] = ()


@dataclass
class _Choice:
    text: str = ""
    finish_reason: str | None = None
    generated: int = 0
    logprobs: list[Event] = field(default_factory=list)


def _sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


class Server:
    def __init__(self, model, tokenizer, options: ServerOptions | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.options = options or ServerOptions()
        self.names = {self.options.name, "default"}
        self.metrics = Metrics()
        self.scheduler = Scheduler(model, tokenizer, self.options.max_batch, self.options.max_queue,
                                   self.options.prompt_cache_tokens, self.metrics)
        self._token_ids: dict[bytes, int] | None = None
        self._uvicorn: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        routes = [Route("/", self._endpoint("page", self.page, public=True)),
                  Route("/health", self._endpoint("health", self.health, public=True)),
                  Route("/metrics", self._endpoint("metrics", self.metrics_text)),
                  Route("/v1/models", self._endpoint("models", self.models)),
                  Route("/v1/chat/completions", self._endpoint("chat", self.chat), methods=["POST"]),
                  Route("/v1/completions", self._endpoint("completions", self.completions), methods=["POST"]),
                  Route("/v1/embeddings", self._endpoint("embeddings", self.embeddings), methods=["POST"]),
                  Route("/lucidlm/attention", self._endpoint("attention", self.attention), methods=["POST"])]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        if self.options.cors_origins:
            self.app.add_middleware(CORSMiddleware, allow_origins=list(self.options.cors_origins),
                                    allow_methods=["GET", "POST"], allow_headers=["*"])

    @contextlib.asynccontextmanager
    async def _lifespan(self, app) -> AsyncIterator[None]:
        self.scheduler.start()
        yield
        self.scheduler.close()

    # --- running ---------------------------------------------------------------------------------

    def run(self, sock: socket.socket, ready: Callable[[str], None] | None = None) -> None:
        """Serve on a socket from `bind` until Ctrl-C (binding first makes a port in use a clear
        error before the model is even loaded)."""
        self._uvicorn = self._http_server()
        if ready is not None:
            ready(self.url(sock))
        self._uvicorn.run(sockets=[sock])

    def start_background(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve from a thread (tests, benchmarks, notebooks); returns the base URL."""
        sock = bind(host, port)
        self._uvicorn = self._http_server()
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise LucidError("the server did not start")
            time.sleep(0.02)
        return self.url(sock)

    def stop_background(self) -> None:
        if self._uvicorn is not None and self._thread is not None:
            self._uvicorn.should_exit = True
            self._thread.join(timeout=30)

    def _http_server(self) -> uvicorn.Server:
        return uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=2))

    @staticmethod
    def url(sock: socket.socket) -> str:
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    # --- the frame every endpoint shares ------------------------------------------------------------

    def _endpoint(self, name: str, handler: Callable[[Request], Awaitable[Response]], public: bool = False):
        async def endpoint(request: Request) -> Response:
            try:
                if not public:
                    self._authorize(request)
                response = await handler(request)
            except ApiError as exc:
                response = JSONResponse(exc.body(), exc.status)
            except LucidError as exc:
                response = JSONResponse(lucid_error(exc).body(), 400)
            except Exception as exc:  # a bug: say so in the log and to the client, keep serving
                traceback.print_exc(file=sys.stderr)
                error = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")
                response = JSONResponse(error.body(), 500)
            self.metrics.request(name, response.status_code)
            return response
        return endpoint

    def _authorize(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
            raise ApiError(401, "a valid API key is needed: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def _json(self, request: Request) -> Any:
        limit = self.options.max_body
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the request body is over this server's limit of {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is over this server's limit of {limit} bytes")
        try:
            return json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the request body is not valid JSON ({exc})") from None

    # --- small endpoints -----------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.options.name, "running": self.scheduler.running_rows,
                             "waiting": len(self.scheduler.waiting)})

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.text(), media_type="text/plain; version=0.0.4")

    async def models(self, request: Request) -> Response:
        config = self.model.config
        return JSONResponse({"object": "list", "data": [{
            "id": self.options.name, "object": "model", "created": 0, "owned_by": "lucidlm",
            "context_length": config.context_length, "kind": self._kind()}]})

    def describe_page(self, url: str) -> str:
        """What this model answers, for the startup line."""
        return {"decoder": f"chat page: {url}/",
                "encoder": "an encoder: POST /v1/embeddings answers, chat does not",
                "encoder-decoder": "an encoder-decoder: neither chat nor embeddings answer; try lucidlm translate"
                }[self._kind()]

    def _kind(self) -> str:
        config = self.model.config
        if config.is_encoder_decoder:
            return "encoder-decoder"
        return "decoder" if config.causal and config.head == "lm" else "encoder"

    # --- generation ------------------------------------------------------------------------------------

    def _limits(self, sampling: Sampling, prompt: list[int]) -> list:
        """Each choice's settings with max_tokens checked against the context the prompt leaves."""
        context = self.model.config.context_length
        room = context - len(prompt)
        if room <= 0:
            raise ApiError(400, f"the prompt has {len(prompt)} tokens; the model's context is {context}",
                           "messages", "context_length_exceeded")
        if sampling.max_tokens is not None and sampling.max_tokens > room:
            raise ApiError(400, f"max_tokens is {sampling.max_tokens}, but the prompt's {len(prompt)} tokens leave "
                                f"room for {room} in the model's context of {context}", "max_tokens",
                           "context_length_exceeded")
        limit = sampling.max_tokens or room
        return [s.replace(max_tokens=limit) for s in sampling.settings]

    def _job(self, prompt: list[int], sampling: Sampling, outbox: Outbox, first_choice: int = 0) -> GenerationJob:
        return GenerationJob(prompt, self._limits(sampling, prompt), sampling.logprobs, outbox,
                             time.monotonic() + self.options.timeout, first_choice)

    async def chat(self, request: Request) -> Response:
        config = self.model.config
        parsed = parse_chat(await self._json(request), self.names, config.vocab_size, self.scheduler.max_batch,
                            config.context_length)
        self._check_generates()
        prompt = self.tokenizer.apply_chat_template(parsed.messages, add_generation_prompt=True)
        job = self._job(prompt, parsed.sampling, Outbox(asyncio.get_running_loop()))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": self.options.name}
        if parsed.sampling.stream:
            return self._stream([job], self._chat_stream(job, parsed.sampling, head, len(prompt)))
        self.scheduler.submit(job)
        choices, cached = await self._collect([job], request)
        return JSONResponse({**head, "object": "chat.completion", "choices": [
            {"index": i, "message": {"role": "assistant", "content": c.text},
             "logprobs": self._chat_logprobs(c.logprobs) if parsed.sampling.logprobs is not None else None,
             "finish_reason": c.finish_reason} for i, c in enumerate(choices)],
            "usage": self._usage(len(prompt), choices, cached)})

    def _stream(self, jobs: list[GenerationJob], events) -> StreamingResponse:
        """Server-sent events. The jobs are queued when the stream starts, so a client gone before
        then costs nothing. A queue found full now is a 429; one that fills in the moment before
        the stream starts is an error event in the stream, as any later failure is."""
        self.scheduler.check_room(len(jobs))

        def cancel() -> None:
            for job in jobs:
                job.cancel()
        return StreamingResponse(events, media_type="text/event-stream", background=BackgroundTask(cancel))

    async def _chat_stream(self, job: GenerationJob, sampling: Sampling, head: dict, prompt_tokens: int):
        chunk = {**head, "object": "chat.completion.chunk"}
        choices = [_Choice() for _ in job.settings]
        cached = 0
        try:
            self.scheduler.submit(job)
            for i in range(len(choices)):
                yield _sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]})
            async for event in self._events([job], choices):
                if event.kind == "start":
                    cached += event.cached
                    continue
                choice = {"index": event.choice, "delta": {"content": event.text} if event.text else {},
                          "logprobs": None, "finish_reason": choices[event.choice].finish_reason}
                if sampling.logprobs is not None and event.logprob is not None and not self._is_eos(event):
                    choice["logprobs"] = self._chat_logprobs([event])
                if choice["delta"] or choice["finish_reason"] or choice["logprobs"]:
                    yield _sse({**chunk, "choices": [choice]})
            if sampling.include_usage:
                yield _sse({**chunk, "choices": [], "usage": self._usage(prompt_tokens, choices, cached)})
        except ApiError as exc:
            yield _sse(exc.body())
        finally:
            job.cancel()  # a client that went away stops its rows (a finished job has none left)
        yield "data: [DONE]\n\n"

    async def _events(self, jobs: list[GenerationJob], choices: list[_Choice]) -> AsyncIterator[Event]:
        """Every job's events until each choice has finished; keeps `choices` up to date. A timeout or
        a failure raises ApiError."""
        outbox = jobs[0].outbox
        open_choices = len(choices)
        deadline = max(job.deadline for job in jobs) + 5  # the worker ends rows at the deadline; this is a backstop
        while open_choices:
            try:
                event = await asyncio.wait_for(outbox.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise ApiError(504, f"the request ran past this server's timeout of {self.options.timeout:g} s",
                               code="timeout", kind="timeout_error") from None
            if event.kind == "error":
                raise event.error
            if event.kind in ("token", "end"):
                choice = choices[event.choice]
                choice.generated = event.generated
                if event.kind == "end" and event.finish_reason == "timeout":
                    raise ApiError(504, f"the request ran past this server's timeout of {self.options.timeout:g} s",
                                   code="timeout", kind="timeout_error")
                choice.text += event.text
                if event.logprob is not None and not self._is_eos(event):
                    choice.logprobs.append(event)
                if event.finish_reason is not None:
                    choice.finish_reason = event.finish_reason
                    open_choices -= 1
            yield event

    async def _collect(self, jobs: list[GenerationJob], request: Request) -> tuple[list[_Choice], int]:
        """Wait for whole answers; a client that disconnects meanwhile cancels its jobs."""
        choices = [_Choice() for job in jobs for _ in job.settings]
        cached = 0
        watcher = asyncio.create_task(self._cancel_on_disconnect(request, jobs))
        try:
            async for event in self._events(jobs, choices):
                cached += event.cached if event.kind == "start" else 0
        finally:
            watcher.cancel()
            for job in jobs:
                job.cancel()
        return choices, cached

    @staticmethod
    async def _cancel_on_disconnect(request: Request, jobs: list[GenerationJob]) -> None:
        while not await request.is_disconnected():
            await asyncio.sleep(0.25)
        for job in jobs:
            job.cancel()

    def _is_eos(self, event: Event) -> bool:
        return event.token in self.tokenizer.eos_token_ids

    def _check_generates(self) -> None:
        try:
            check_generates(self.model)
        except LucidError as exc:
            also = "; this server's model answers POST /v1/embeddings" if self._kind() == "encoder" else ""
            raise ApiError(400, f"{exc}{also}") from None

    @staticmethod
    def _usage(prompt_tokens: int, choices: list[_Choice], cached: int) -> dict[str, Any]:
        completion = sum(c.generated for c in choices)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion, "prompt_tokens_details": {"cached_tokens": cached}}

    def _token(self, token: int) -> tuple[str, list[int]]:
        raw = self.tokenizer.token_bytes(token)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _chat_logprobs(self, events: list[Event]) -> dict[str, Any]:
        content = []
        for event in events:
            text, raw = self._token(event.token)
            top = []
            for token, logprob in event.top or []:
                t_text, t_raw = self._token(token)
                top.append({"token": t_text, "logprob": logprob, "bytes": t_raw})
            content.append({"token": text, "logprob": event.logprob, "bytes": raw, "top_logprobs": top})
        return {"content": content, "refusal": None}

    # --- the legacy completions endpoint ------------------------------------------------------------

    async def completions(self, request: Request) -> Response:
        config = self.model.config
        parsed = parse_completion(await self._json(request), self.names, config.vocab_size,
                                  self.scheduler.max_batch, config.context_length)
        self._check_generates()
        sampling = parsed.sampling
        if len(parsed.prompts) > self.scheduler.max_queue:
            raise ApiError(400, f"at most {self.scheduler.max_queue} prompts per request on this server", "prompt")
        prompts = [prompt_ids(self.tokenizer, p) for p in parsed.prompts]
        n = len(sampling.settings)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": self.options.name}
        scored = [await self._score(ids, sampling.logprobs or 0) if parsed.echo and sampling.logprobs is not None
                  else None for ids in prompts]
        echoed = [self.tokenizer.decode(ids) if parsed.echo else "" for ids in prompts]
        prompt_tokens = sum(len(ids) for ids in prompts)
        if sampling.max_tokens == 0:  # echo only: score the prompts, generate nothing
            choices = [{"index": p * n + j, "text": echoed[p], "finish_reason": "length",
                        "logprobs": self._legacy_logprobs(prompts[p], scored[p], [], 0) if sampling.logprobs is not None
                        else None} for p in range(len(prompts)) for j in range(n)]
            return JSONResponse({**head, "object": "text_completion", "choices": choices,
                                 "usage": self._usage(prompt_tokens, [], 0)})
        outbox = Outbox(asyncio.get_running_loop())
        jobs = [self._job(ids, sampling, outbox, p * n) for p, ids in enumerate(prompts)]
        if sampling.stream:
            return self._stream(jobs, self._completion_stream(jobs, sampling, head, prompts, echoed, scored))
        self.scheduler.submit(*jobs)
        choices, cached = await self._collect(jobs, request)
        return JSONResponse({**head, "object": "text_completion", "choices": [
            {"index": i, "text": echoed[i // n] + c.text, "finish_reason": c.finish_reason,
             "logprobs": self._legacy_logprobs(prompts[i // n], scored[i // n], c.logprobs, 0)
             if sampling.logprobs is not None else None} for i, c in enumerate(choices)],
            "usage": self._usage(prompt_tokens, choices, cached)})

    async def _completion_stream(self, jobs: list[GenerationJob], sampling: Sampling, head: dict,
                                 prompts: list[list[int]], echoed: list[str], scored: list):
        chunk = {**head, "object": "text_completion"}
        prompt_tokens = sum(len(ids) for ids in prompts)
        n = len(sampling.settings)
        choices = [_Choice() for _ in range(len(jobs) * n)]
        cached = 0
        try:
            self.scheduler.submit(*jobs)
            for i in range(len(choices)):
                if echoed[i // n]:
                    logprobs = self._legacy_logprobs(prompts[i // n], scored[i // n], [], 0) \
                        if sampling.logprobs is not None else None
                    yield _sse({**chunk, "choices": [{"index": i, "text": echoed[i // n], "logprobs": logprobs,
                                                      "finish_reason": None}]})
            async for event in self._events(jobs, choices):
                if event.kind == "start":
                    cached += event.cached
                    continue
                logprobs = None
                if sampling.logprobs is not None and event.logprob is not None and not self._is_eos(event):
                    done = len(echoed[event.choice // n]) + len(choices[event.choice].text) - len(event.text)
                    logprobs = self._legacy_logprobs(None, None, [event], done)
                finish = choices[event.choice].finish_reason
                if event.text or finish or logprobs:
                    yield _sse({**chunk, "choices": [{"index": event.choice, "text": event.text, "logprobs": logprobs,
                                                      "finish_reason": finish}]})
            if sampling.include_usage:
                yield _sse({**chunk, "choices": [], "usage": self._usage(prompt_tokens, choices, cached)})
        except ApiError as exc:
            yield _sse(exc.body())
        finally:
            for job in jobs:
                job.cancel()
        yield "data: [DONE]\n\n"

    async def _score(self, ids: list[int], top: int) -> list[tuple[float | None, list[tuple[int, float]]]]:
        """Each prompt token's log-probability given the tokens before it (the first has none) and
        the top alternatives: what evaluation harnesses read with echo and max_tokens 0."""
        if len(ids) > self.model.config.context_length:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; the model's context is "
                                f"{self.model.config.context_length}", "prompt", "context_length_exceeded")

        @torch.no_grad()
        def work():
            cache = KVCache(self.model.config, 1, len(ids), device=self.model.device, dtype=self.model.dtype)
            out: list[tuple[float | None, list[tuple[int, float]]]] = [(None, [])]
            for start in range(0, len(ids) - 1, SCORE_CHUNK):
                chunk = ids[start:start + SCORE_CHUNK]
                logprobs = self.model(torch.tensor([chunk], device=self.model.device), cache=cache)[0]
                logprobs = logprobs.float().log_softmax(-1)
                following = ids[start + 1:start + 1 + len(chunk)]
                for row, token in zip(logprobs, following):
                    pairs = list(zip(*[t.tolist() for t in row.topk(top)][::-1])) if top else []
                    out.append((float(row[token]), pairs))
            return out
        return await self.scheduler.call(work)

    def _legacy_logprobs(self, prompt: list[int] | None, scored, events: list[Event], offset: int) -> dict[str, Any]:
        """The completions endpoint's format: tokens, token_logprobs, top_logprobs (None for a
        first prompt token, which has no context) and text_offset, from `offset` on."""
        entries = [(token, logprob, top) for token, (logprob, top) in zip(prompt, scored)] if scored else []
        entries += [(e.token, e.logprob, e.top or []) for e in events]
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, logprob, top in entries:
            text = self._token(token)[0]
            out["tokens"].append(text)
            out["token_logprobs"].append(logprob)
            out["top_logprobs"].append(None if logprob is None else {self._token(t)[0]: v for t, v in top})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    # --- embeddings and the page's look inside ---------------------------------------------------------

    async def embeddings(self, request: Request) -> Response:
        parsed = parse_embedding(await self._json(request), self.names)
        if self.model.config.causal:
            raise ApiError(400, "this server's model generates text and makes no embeddings: serve an encoder "
                                "such as all-MiniLM-L6-v2 for POST /v1/embeddings", "model")

        def work():
            vectors = self.model.encode(parsed.texts, tokenizer=self.tokenizer).float().cpu()
            counts = [len(ids) for ids in self.tokenizer(parsed.texts, truncation=True)["input_ids"]]
            return vectors, sum(counts)
        vectors, tokens = await self.scheduler.call(work)
        data = []
        for i, vector in enumerate(vectors):
            values = vector.numpy().astype("<f4")
            embedding = base64.b64encode(values.tobytes()).decode() if parsed.base64 else values.tolist()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return JSONResponse({"object": "list", "data": data, "model": self.options.name,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def attention(self, request: Request) -> Response:
        parsed = parse_attention(await self._json(request))
        self._check_generates()
        ids = self.tokenizer.apply_chat_template(parsed.messages, add_generation_prompt=True)
        ids += [self._id_of(raw) for raw in parsed.completion]
        if len(ids) > ATTENTION_LIMIT:
            raise ApiError(400, f"the page's attention view reads at most {ATTENTION_LIMIT} tokens; this "
                                f"conversation has {len(ids)}", "messages")
        view = await self.scheduler.call(lambda: attention(self.model, self.tokenizer, ids))
        last = view.weights[:, :, -1, :].mean(axis=1)  # (L, T): the last token's attention, mean of heads
        return JSONResponse({"tokens": view.tokens, "layers": view.layers,
                             "weights": np.round(last, 5).tolist()})

    def _id_of(self, raw: bytes) -> int:
        if self._token_ids is None:  # the lowest id wins where two tokens share bytes
            size = self.tokenizer.vocab_size
            self._token_ids = {self.tokenizer.token_bytes(i): i for i in reversed(range(size))}
        if raw not in self._token_ids:
            raise ApiError(400, f"completion: {raw!r} is not a token of this model", "completion")
        return self._token_ids[raw]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line error (the port is taken, the host is not this machine's)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LucidError(f"cannot serve on host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise LucidError(f"cannot serve on {host}:{port}: {exc.strerror} (try another --port)") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
