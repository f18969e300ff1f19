"""What the server counts, shown at GET /metrics in Prometheus' text format (version 0.0.4).

Counters only grow; the gauges are the last measured values. The worker thread and the event loop
both write here, so every change takes the lock.
"""

from __future__ import annotations

import threading
from collections import Counter


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()  # (endpoint, status) -> count
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.prompt_cache_hits = 0
        self.generated_tokens = 0
        self.first_token_seconds_sum = 0.0
        self.first_token_count = 0
        self.prefill_tokens_per_second = 0.0
        self.decode_tokens_per_second = 0.0
        self.running_rows = 0
        self.queued_requests = 0

    def request(self, endpoint: str, status: int) -> None:
        with self.lock:
            self.requests[(endpoint, status)] += 1

    def prefill(self, computed: int, cached: int, seconds: float) -> None:
        with self.lock:
            self.prompt_tokens += computed + cached
            self.cached_tokens += cached
            self.prompt_cache_hits += cached > 0
            if computed and seconds > 0:
                self.prefill_tokens_per_second = computed / seconds

    def first_token(self, seconds: float) -> None:
        with self.lock:
            self.first_token_seconds_sum += seconds
            self.first_token_count += 1

    def decode_step(self, rows: int, seconds: float) -> None:
        with self.lock:
            self.generated_tokens += rows
            if seconds > 0:
                self.decode_tokens_per_second = rows / seconds

    def load(self, running: int, queued: int) -> None:
        with self.lock:
            self.running_rows, self.queued_requests = running, queued

    def text(self) -> str:
        with self.lock:
            lines = ["# HELP lucidlm_requests_total HTTP requests answered, by endpoint and status.",
                     "# TYPE lucidlm_requests_total counter"]
            for (endpoint, status), count in sorted(self.requests.items()):
                lines.append(f'lucidlm_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
            for name, kind, help_text, value in [
                ("prompt_tokens_total", "counter", "Prompt tokens read, cached ones included.", self.prompt_tokens),
                ("prompt_cache_tokens_total", "counter", "Prompt tokens found in the prompt cache.",
                 self.cached_tokens),
                ("prompt_cache_hits_total", "counter", "Requests that reused a cached prefix.", self.prompt_cache_hits),
                ("generated_tokens_total", "counter", "Tokens generated.", self.generated_tokens),
                ("time_to_first_token_seconds_sum", "counter", "Seconds from arrival to the first token, summed.",
                 self.first_token_seconds_sum),
                ("time_to_first_token_seconds_count", "counter", "Requests that got a first token.",
                 self.first_token_count),
                ("prefill_tokens_per_second", "gauge", "Prompt tokens computed per second, last prefill.",
                 self.prefill_tokens_per_second),
                ("decode_tokens_per_second", "gauge", "Tokens generated per second over all rows, last step.",
                 self.decode_tokens_per_second),
                ("running_rows", "gauge", "Rows in the decoding batch.", self.running_rows),
                ("queued_requests", "gauge", "Requests waiting to join the batch.", self.queued_requests)]:
                lines += [f"# HELP lucidlm_{name} {help_text}", f"# TYPE lucidlm_{name} {kind}",
                          f"lucidlm_{name} {value:g}" if isinstance(value, float) else f"lucidlm_{name} {value}"]
            return "\n".join(lines) + "\n"
