"""Decode speed and memory of SmolLM2-135M per weight format, lucidlm beside transformers and
llama.cpp, same run, 2 threads.

lucidlm: float32 and bfloat16 (the Q4_1 file dequantized), and the file's quantized matrices held
in memory (dtype "auto") for the Q4_1 file and a Q8_0 file written by `lucidlm quantize` from it
(the only SmolLM2 weights on this disk are the Q4_1 file's, so the Q8_0 file holds those numbers).
transformers: float32 and bfloat16 (it dequantizes GGUF files at load). llama.cpp: llama-bench's
pp512 and tg128 on the F32, Q8_0 and Q4_1 files, built from source by bench/llama_build.py.

Each measurement runs in its own subprocess, so its peak RSS is its own. Figures: load seconds
(tokenizer included, imports excluded), prefill tok/s of a 512-token prompt, decode tok/s of 128
greedy tokens after a short prompt, peak RSS; `lucidlm chat`'s own peak RSS answering one message;
the read bandwidth of the machine and the fraction of it each decode reaches (weight bytes per
token x tokens/s). One JSON line.

    python bench/decode.py
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHORT_PROMPT = "The capital of France is"
NEW_TOKENS = 128


def long_prompt_ids(tokenizer_encode) -> list[int]:
    text = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:8000]
    ids = tokenizer_encode(text)[:512]
    assert len(ids) == 512
    return ids


CACHE = Path.home() / ".cache" / "lucidlm-bench"
# format -> (file, lucidlm dtype); files other than the default model are made by quantize_file
FORMATS = {"fp32": ("q4_1", "float32"), "bf16": ("q4_1", "bfloat16"), "q8_0": ("q8_0", "auto"),
           "q4_1": ("q4_1", "auto")}


def model_file(kind: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from lucidlm.default_model import default_model_path

    if kind == "q4_1":
        return default_model_path()
    path = CACHE / f"SmolLM2-135M-Instruct.{kind.upper()}.gguf"
    if not path.exists():
        from lucidlm.weights.quantize import quantize_model

        CACHE.mkdir(parents=True, exist_ok=True)
        quantize_model(default_model_path(), path, kind)
    return path


def weight_bytes(model) -> int:
    """Bytes of weights one decoded token reads: every parameter and buffer (the KV cache aside)."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def measure_lucidlm(fmt: str = "fp32") -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    import lucidlm
    from lucidlm.generation import PromptCache, generate_tokens

    torch.set_num_threads(2)
    kind, dtype = FORMATS[fmt]
    path = model_file(kind)
    start = time.perf_counter()
    model, tokenizer = lucidlm.load(path, dtype=dtype)
    load_s = time.perf_counter() - start
    short = tokenizer.encode(SHORT_PROMPT)
    long = long_prompt_ids(tokenizer.encode)

    def decode(prompt: list[int]) -> tuple[float, float]:
        cache = PromptCache(model, capacity=len(prompt) + NEW_TOKENS)
        stream = generate_tokens(model, prompt, cache)  # greedy; EOS is not special to the engine
        t0 = time.perf_counter()
        next(stream)  # prefill + first token
        t1 = time.perf_counter()
        for _ in range(NEW_TOKENS - 1):
            next(stream)
        t2 = time.perf_counter()
        return len(prompt) / (t1 - t0), (NEW_TOKENS - 1) / (t2 - t1)

    decode(short)  # warm-up
    short_runs = [decode(short)[1] for _ in range(3)]
    long_runs = [decode(long) for _ in range(3)]
    return {"load_s": load_s, "prefill_tps": statistics.median(r[0] for r in long_runs),
            "decode_tps": statistics.median(short_runs), "decode_after_512_tps": statistics.median(r[1] for r in long_runs),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "weight_mib": weight_bytes(model) / 2 ** 20}


def measure_chat_rss() -> dict:
    """`lucidlm chat` with the default model, one message and its answer: the child's peak RSS."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lucidlm", "chat", "--threads", "2", "--max-tokens", "32"], cwd=ROOT,
                   input="What is the capital of France?\n", capture_output=True, text=True, check=True)
    return {"chat_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "chat_wall_s": time.perf_counter() - start}


def measure_bandwidth() -> dict:
    """Read bandwidth on 2 threads: sums of a 1 GiB float32 tensor (far beyond any cache)."""
    import torch

    torch.set_num_threads(2)
    big = torch.ones(2 ** 28)
    big.sum()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        big.sum()
        times.append(time.perf_counter() - start)
    return {"read_gb_s": big.numel() * 4 / min(times) / 1e9}


def measure_llama_cpp(kind: str) -> dict:
    """llama-bench pp512 and tg128 (2 threads, 3 repetitions) and its peak RSS."""
    sys.path.insert(0, str(ROOT / "bench"))
    from llama_build import llama_tool

    tool, why = llama_tool("llama-bench")
    if tool is None:
        return {"error": why}
    path = model_file(kind)
    out = subprocess.run([str(tool), "-m", str(path), "-t", "2", "-p", "512", "-n", "128", "-r", "3", "-o", "json"],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    speed = {("prefill_tps" if r["n_prompt"] else "decode_tps"): r["avg_ts"] for r in rows}
    return {**speed, "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "file_mib": path.stat().st_size / 2 ** 20}


def measure_transformers(dtype_name: str = "fp32") -> dict:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT))
    from lucidlm.default_model import default_model_path

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    path = default_model_path()
    start = time.perf_counter()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    load_s = time.perf_counter() - start
    short = tokenizer(SHORT_PROMPT).input_ids
    long = long_prompt_ids(lambda text: tokenizer(text).input_ids)

    def decode(prompt: list[int]) -> tuple[float, float]:
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            t0 = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False)
            t1 = time.perf_counter()
            model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False)
            t2 = time.perf_counter()
        prefill = t1 - t0
        return len(prompt) / prefill, (NEW_TOKENS - 1) / ((t2 - t1) - prefill)

    decode(short)
    short_runs = [decode(short)[1] for _ in range(3)]
    long_runs = [decode(long) for _ in range(3)]
    return {"load_s": load_s, "prefill_tps": statistics.median(r[0] for r in long_runs),
            "decode_tps": statistics.median(short_runs), "decode_after_512_tps": statistics.median(r[1] for r in long_runs),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child(*which: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        result = {"lucidlm": measure_lucidlm, "transformers": measure_transformers, "llama.cpp": measure_llama_cpp,
                  "chat": measure_chat_rss, "bandwidth": measure_bandwidth}[sys.argv[2]](*sys.argv[3:])
        print(json.dumps(result))
        return
    for kind in ("q8_0", "f32"):
        model_file(kind)  # written once, before anything is timed
    out = {"model": "SmolLM2-135M-Instruct", "threads": 2, "new_tokens": NEW_TOKENS}
    bandwidth = child("bandwidth")["read_gb_s"]
    out["read_gb_s"] = round(bandwidth, 1)
    for fmt in FORMATS:
        ours = child("lucidlm", fmt)
        for key, value in ours.items():
            out[f"lucidlm_{fmt}_{key}"] = round(value, 2)
        out[f"lucidlm_{fmt}_bandwidth_fraction"] = round(ours["weight_mib"] * 2 ** 20 * ours["decode_tps"]
                                                         / (bandwidth * 1e9), 3)
    for fmt in ("fp32", "bf16"):
        for key, value in child("transformers", fmt).items():
            out[f"transformers_{fmt}_{key}"] = round(value, 2)
    for kind in ("f32", "q8_0", "q4_1"):
        for key, value in child("llama.cpp", kind).items():
            out[f"llama.cpp_{kind}_{key}"] = round(value, 2) if isinstance(value, float) else value
    for fmt, kind in (("q4_1", "q4_1"), ("q8_0", "q8_0"), ("fp32", "f32")):
        for key in ("decode_tps", "prefill_tps"):
            theirs = out.get(f"llama.cpp_{kind}_{key}")
            if theirs:
                out[f"ratio_{fmt}_{key}_vs_llama.cpp"] = round(out[f"lucidlm_{fmt}_{key}"] / theirs, 3)
    out.update({k: round(v, 2) for k, v in child("chat").items()})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
