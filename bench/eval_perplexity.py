"""Perplexity of the default model on tinyshakespeare's first 50,000 tokens: lucidlm's rolling
windows against transformers' strided loop (https://huggingface.co/docs/transformers/perplexity)
with the same window and stride, and llama.cpp's llama-perplexity on the same GGUF where it is
built (bench/llama_build.py). Prints one JSON object; nothing here is asserted.

    python bench/eval_perplexity.py [--tokens 50000] [--window 1024] [--stride 512] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lucidlm  # noqa: E402
from lucidlm.default_model import default_model_path  # noqa: E402
from lucidlm.evaluate import text_perplexity  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


def transformers_strided(path: Path, ids: list[int], window: int, stride: int) -> tuple[float, int]:
    import transformers

    transformers.logging.set_verbosity_error()
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()
    total, count, prev_end = 0.0, 0, 0
    with torch.inference_mode():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            trg_len = end - prev_end
            input_ids = torch.tensor([ids[begin:end]])
            logits = hf(input_ids).logits[0, :-1].float()  # (T-1, V) predicting ids[begin+1:end]
            targets = input_ids[0, 1:]
            keep = torch.arange(len(targets)) >= len(targets) - trg_len  # HF's labels != -100, shifted
            total += float(logits[keep].log_softmax(-1).gather(1, targets[keep][:, None]).double().sum())
            count += int(keep.sum())
            prev_end = end
            if end == len(ids):
                break
    return total, count


def llama_perplexity(path: Path, window: int, chunks: int, threads: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from llama_build import llama_tool

    tool, why = llama_tool("llama-perplexity")
    if tool is None:
        return {"measured": False, "why": why}
    out = subprocess.run(["nice", str(tool), "-m", str(path), "-f", str(DATA), "-c", str(window), "-b", str(window),
                          "--chunks", str(chunks), "-t", str(threads)], capture_output=True, text=True)
    found = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out.stdout + out.stderr)
    if not found:
        return {"measured": False, "why": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return {"measured": True, "ppl": float(found.group(1)), "plus_minus": float(found.group(2)),
            "context": window, "chunks": chunks,
            "scheme": "non-overlapping chunks of the context; the second half of each is scored"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = default_model_path()
    text = DATA.read_text(encoding="utf-8")
    model, tokenizer = lucidlm.load(path, dtype="float32")
    start = time.perf_counter()
    ours = text_perplexity(model, tokenizer, text, args.window, args.stride, args.tokens)
    report = {"model": path.name, "tokens_read": ours.tokens_read, "window": args.window, "stride": args.stride,
              "lucidlm": {"tokens": ours.rolling.tokens, "logprob": ours.rolling.logprob,
                          "perplexity": ours.rolling.perplexity, "nats_per_token": ours.rolling.nats_per_token,
                          "bits_per_byte": ours.bits_per_byte, "seconds": round(time.perf_counter() - start, 1)}}
    print(json.dumps(report), file=sys.stderr, flush=True)
    if not args.skip_transformers:
        ids = tokenizer.encode(text)[:args.tokens]
        start = time.perf_counter()
        total, count = transformers_strided(path, ids, args.window, args.stride)
        report["transformers"] = {"tokens": count, "logprob": total, "perplexity": math.exp(-total / count),
                                  "seconds": round(time.perf_counter() - start, 1)}
        report["relative_difference"] = abs(ours.rolling.logprob - total) / abs(total)
        print(json.dumps(report), file=sys.stderr, flush=True)
    chunks = -(-args.tokens // args.window)
    report["llama_perplexity"] = llama_perplexity(path, args.window, chunks, args.threads)
    if report["llama_perplexity"].get("measured"):
        report["llama_relative_difference"] = abs(ours.rolling.perplexity - report["llama_perplexity"]["ppl"]) / \
            report["llama_perplexity"]["ppl"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
