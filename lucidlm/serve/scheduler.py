"""The model's one worker thread: continuous batching over the token engine.

Requests wait in a bounded queue. Between two decode steps the worker admits the ones that fit
(at most `max_batch` rows in all), prefills each
prompt alone from the longest prefix the PromptStore holds, and lets its rows join the running
batch; a row leaves when it finishes, when its client goes away (`cancel()`), or at its deadline.
Everything that touches the model runs here, one thing at a time: other model work (scoring a
prompt, embeddings, the page's attention) is a `call` run between steps.

Tokens go back to the event loop through each job's Outbox, which is thread-safe.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import LucidError
from ..generation import GenerationSettings, PromptCache, TokenEngine
from ..generation.text import Request, RowText
from .metrics import Metrics
from .prompt_store import PromptStore
from .protocol import ApiError


@dataclass
class Event:
    kind: str  # "start" (prompt read), "token", "end" (cancelled or timed out), "error"
    choice: int = 0
    text: str = ""
    token: int | None = None
    logprob: float | None = None
    top: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    generated: int = 0  # tokens this choice has generated so far
    cached: int = 0  # "start": prompt tokens found in the prompt cache
    error: ApiError | None = None


class Outbox:
    """Events from the worker thread to one request's coroutine."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.queue = loop, asyncio.Queue()

    def put(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def get(self) -> Event:
        return await self.queue.get()


@dataclass
class GenerationJob:
    prompt: list[int]
    settings: list[GenerationSettings]  # one per choice
    logprobs: int | None  # None: no log-probabilities; k: the chosen token's and the top k
    outbox: Outbox
    deadline: float  # time.monotonic() after which the job is ended
    first_choice: int = 0  # the response's index of this job's first choice (several prompts, one response)
    arrived: float = field(default_factory=time.monotonic)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """The client went away: its rows stop computing at the next step."""
        self.cancelled.set()


@dataclass
class _Row:
    job: GenerationJob
    choice: int
    text: RowText


class Scheduler:
    def __init__(self, model, tokenizer, max_batch: int = 8, max_queue: int = 256,
                 prompt_cache_tokens: int = 4096, metrics: Metrics | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.sliding = model.config.all_layers_slide  # a sliding cache cannot take joining rows
        self.max_batch = 1 if self.sliding else max_batch
        self.max_queue = max_queue
        self.store = PromptStore(model, prompt_cache_tokens) if prompt_cache_tokens > 0 and not self.sliding else None
        self.metrics = metrics or Metrics()
        self.cond = threading.Condition()
        self.waiting: deque[GenerationJob] = deque()
        self.calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self.engine: TokenEngine | None = None
        self.rows: dict[int, _Row] = {}
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="lucidlm-model", daemon=True)

    # --- called from the event loop ----------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join(timeout=30)

    def submit(self, *jobs: GenerationJob) -> None:
        """Queue jobs (one request's), all or none."""
        for job in jobs:
            if len(job.settings) > self.max_batch:
                raise ApiError(400, f"n must be at most {self.max_batch}, this server's batch", "n")
        with self.cond:
            self.check_room(len(jobs))
            self.waiting.extend(jobs)
            self.cond.notify()

    def check_room(self, jobs: int) -> None:
        """A 429 when the queue has no room for this many more jobs."""
        if len(self.waiting) + jobs > self.max_queue:
            raise ApiError(429, f"the server is busy: {len(self.waiting)} requests are already waiting "
                                f"(at most {self.max_queue})", code="queue_full", kind="rate_limit_error")

    def call(self, work: Callable[[], Any]) -> "asyncio.Future[Any]":
        """Run `work()` on the worker thread between two steps; await the result."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.cond:
            self.calls.append((work, future))
            self.cond.notify()
        return asyncio.wrap_future(future)

    @property
    def running_rows(self) -> int:
        engine = self.engine  # read once: the worker may drop it meanwhile
        return engine.rows_running if engine is not None else 0

    # --- the worker thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not (self.closed or self.waiting or self.calls or self.running_rows):
                    self.cond.wait()
                if self.closed:
                    return
                calls = list(self.calls)
                self.calls.clear()
                admitted = self._admit()
            for work, future in calls:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(work())
                    except BaseException as exc:  # the awaiting request turns it into an HTTP error
                        future.set_exception(exc)
            for job in admitted:
                try:
                    self._start(job)
                except Exception as exc:  # this request fails alone; the batch goes on
                    job.outbox.put(Event("error", error=ApiError(500, f"the model failed: {type(exc).__name__}: "
                                                                      f"{exc}", kind="server_error")))
            try:
                self._end_abandoned()
                if self.running_rows:
                    self._step()
            except Exception as exc:  # a bug must not silence the server: fail the rows it touched
                self._fail_all(exc)
            if self.engine is not None and not self.running_rows:
                self.engine = None  # free the batch's cache
            self.metrics.load(self.running_rows, len(self.waiting))

    def _admit(self) -> list[GenerationJob]:
        """The waiting jobs that fit now, oldest first (a job that does not fit waits, and so do
        those behind it: none is starved)."""
        admitted: list[GenerationJob] = []
        now = time.monotonic()
        while self.waiting:
            job = self.waiting[0]
            if job.cancelled.is_set() or now > job.deadline:
                self.waiting.popleft()
                if not job.cancelled.is_set():
                    job.outbox.put(Event("error", error=ApiError(504, "the request timed out while it waited",
                                                                 code="timeout", kind="timeout_error")))
                continue
            if not self._fits(job, admitted):
                break
            admitted.append(self.waiting.popleft())
        return admitted

    def _fits(self, job: GenerationJob, admitted: list[GenerationJob]) -> bool:
        """Room in the batch is all a job needs. The context needs no reservation: every row's
        tokens end at the batch cache's last slot and leading padding is dropped when rows leave,
        so the cache is exactly as long as its longest row, and no row outgrows the context (its
        prompt plus its max_tokens fit, which the request was checked for)."""
        rows = self.running_rows + sum(len(j.settings) for j in admitted)
        if rows == 0:
            return True
        return not self.sliding and rows + len(job.settings) <= self.max_batch

    def _start(self, job: GenerationJob) -> None:
        started = time.perf_counter()
        base = self.store.lookup(job.prompt) if self.store is not None else None
        base = base or PromptCache(self.model)
        try:
            logits = base.prefill(job.prompt)
        except LucidError as exc:
            job.outbox.put(Event("error", error=ApiError(400, str(exc))))
            return
        self.metrics.prefill(base.last_prefill, base.reused, time.perf_counter() - started)
        job.outbox.put(Event("start", cached=base.reused))
        if self.engine is None:
            self.engine = TokenEngine(self.model, [], [], [], [])
        last = len(job.settings) - 1
        for choice, settings in enumerate(job.settings):
            # Every choice starts from the prefilled prompt: the last takes it, the others a copy.
            prefix = base if choice == last else PromptCache.holding(self.model, base.cache.take_row(0), base.tokens)
            request = Request(job.prompt, settings)
            row = self.engine.add(job.prompt, request.sampler, request.processors, request.generator, prefix, logits)
            self.rows[row] = _Row(job, choice, RowText(self.tokenizer, request, settings.max_tokens))

    def _step(self) -> None:
        started = time.perf_counter()
        out = self.engine.step()
        now = time.perf_counter()
        if not out:  # the context is full (admission should prevent it): end every row there
            for row in list(self.rows):
                self._end(row, "length")
            return
        self.metrics.decode_step(len(out), now - started)
        for row, token, logprobs in out:
            state = self.rows.get(row)
            if state is None:  # ended between steps; the engine drops it at the next one
                continue
            text, finish = state.text.add(token)
            job = state.job
            if state.text.generated == 1:
                self.metrics.first_token(time.monotonic() - job.arrived)
            event = Event("token", job.first_choice + state.choice, text, token, finish_reason=finish,
                          generated=state.text.generated)
            if job.logprobs is not None:
                event.logprob = float(logprobs[token])
                if job.logprobs:
                    values, ids = logprobs.topk(job.logprobs)
                    event.top = list(zip(ids.tolist(), values.tolist()))
            job.outbox.put(event)
            if finish is not None:
                self._end(row, None)

    def _end_abandoned(self) -> None:
        now = time.monotonic()
        for row, state in list(self.rows.items()):
            if state.job.cancelled.is_set():
                self._end(row, "cancelled")
            elif now > state.job.deadline:
                self._end(row, "timeout")

    def _end(self, row: int, reason: str | None) -> None:
        """Take a row out of the batch (reason None: it finished and said so already), keeping its
        tokens' cache for a request that continues the conversation."""
        state = self.rows.pop(row)
        self.engine.finish(row)
        if self.store is not None and state.choice == 0 and row in self.engine.active:
            slot = self.engine.row_slot(row)
            self.store.keep(self.engine.cache.rows[slot], self.engine.cache.cache.take_row(slot))
        if reason is not None:
            state.job.outbox.put(Event("end", state.job.first_choice + state.choice, finish_reason=reason,
                                       generated=state.text.generated))

    def _fail_all(self, exc: Exception) -> None:
        error = ApiError(500, f"the model failed: {type(exc).__name__}: {exc}", kind="server_error")
        for state in self.rows.values():
            state.job.outbox.put(Event("error", error=error))
        self.rows.clear()
        self.engine = None
