"""Serving under load: `lucidlm serve` and llama.cpp's `llama-server` on the same GGUF file, same run.

Each server runs on loopback with 2 threads and 8 batch rows (llama-server: 8 slots). In phases
of 1, 8 and 64 (twice) concurrent streaming chat clients, each client sends a fixed number of its
own questions with max_tokens fixed, so every phase is bounded. A phase's figures: requests,
errors (a non-200 answer, a stream without a finish or [DONE]), completion tokens (from each
stream's usage), aggregate tokens/s over the phase's wall time, p50/p99 time to first token seen
from the client, and the server's peak RSS after the phase (so growth would show). `ok` is false
when any request failed. One JSON line: both servers and the ratios lucidlm / llama-server.

    python bench/serve.py                 # builds llama-server first when it can (bench/llama_build.py)
    python bench/serve.py --no-llama      # lucidlm alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_build import llama_tool  # noqa: E402 (bench/llama_build.py, beside this file)

# (name, concurrent clients, requests each, max_tokens); 64 clients twice, so memory that keeps
# growing would show in the second round's peak RSS.
PHASES = [("c1", 1, 3, 64), ("c8", 8, 2, 64), ("c64", 64, 1, 32), ("c64_again", 64, 1, 32)]
TOPICS = ["the sea", "a cat", "winter", "Paris", "a robot", "the moon", "bread", "music"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_stream(port: int, model: str, question: str, max_tokens: int) -> dict:
    """One streaming chat request over a raw socket (a client light enough not to steal the
    server's two cores); its status, first-token time, tokens and whether it completed."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": question}], "stream": True,
                       "max_tokens": max_tokens, "temperature": 0.7, "seed": 1,
                       "stream_options": {"include_usage": True}}).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    first = None
    finished = done = False
    tokens = 0
    async for raw in reader:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            done = True
            continue
        chunk = json.loads(line[6:])
        for choice in chunk.get("choices") or []:
            if first is None and (choice.get("delta") or {}).get("content"):
                first = time.perf_counter() - start
            finished = finished or choice.get("finish_reason") is not None
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    writer.close()
    return {"status": status, "ttft": first, "tokens": tokens, "complete": status == 200 and finished and done}


async def phase(port: int, model: str, clients: int, each: int, max_tokens: int) -> dict:
    async def client(i: int) -> list[dict]:
        return [await one_stream(port, model, f"Write two sentences about {TOPICS[(i + r) % len(TOPICS)]} "
                                              f"(note {i}.{r}).", max_tokens) for r in range(each)]

    start = time.perf_counter()
    results = [r for rs in await asyncio.gather(*(client(i) for i in range(clients))) for r in rs]
    wall = time.perf_counter() - start
    firsts = sorted(r["ttft"] for r in results if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in results)
    return {"clients": clients, "requests": len(results), "errors": sum(not r["complete"] for r in results),
            "tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2),
            "ttft_p50_s": round(statistics.median(firsts), 3) if firsts else None,
            "ttft_p99_s": round(firsts[min(len(firsts) - 1, int(0.99 * len(firsts)))], 3) if firsts else None}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def wait_ready(port: int, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def measure(command: list[str], port: int, model: str) -> dict:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        asyncio.run(phase(port, model, 1, 1, 8))  # warm-up
        out = {}
        for name, clients, each, tokens in PHASES:
            out[name] = asyncio.run(phase(port, model, clients, each, tokens))
            out[name]["peak_rss_mib"] = peak_rss_mib(proc.pid)  # so far: growth shows phase by phase
        out["ok"] = all(out[name]["errors"] == 0 for name, _, _, _ in PHASES)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-llama", action="store_true", help="do not build or run llama-server")
    args = parser.parse_args()
    from lucidlm.default_model import default_model_path

    gguf = default_model_path()
    port = free_port()
    result = {"model": gguf.name, "threads": 2, "batch_rows": 8, "phases": PHASES,
              "lucidlm": measure([sys.executable, "-m", "lucidlm", "serve", "--port", str(port), "--threads", "2",
                                  "--max-batch", "8", "--max-queue", "256"], port, "default")}
    tool, why = (None, "--no-llama") if args.no_llama else llama_tool("llama-server")
    if tool is None:
        result["llama_server"] = {"skipped": why}
    else:
        port = free_port()
        result["llama_server"] = measure([str(tool), "-m", str(gguf), "--port", str(port), "-t", "2", "-tb", "2",
                                          "-np", "8", "-c", str(8 * 2048), "--no-webui"], port, "default")
        result["ratio_tokens_per_s"] = {
            phase: round(result["lucidlm"][phase]["tokens_per_s"] / result["llama_server"][phase]["tokens_per_s"], 3)
            for phase in ("c1", "c8", "c64", "c64_again")}
    ours = result["lucidlm"]
    result["batching_gain_c8"] = round(ours["c8"]["tokens_per_s"] / ours["c1"]["tokens_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
