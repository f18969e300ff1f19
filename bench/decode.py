"""Decode speed: SmolLM2-135M (fp32, 2 threads) in lucidlm and in transformers, same run.

Each implementation is measured in its own subprocess, so its peak RSS is its own. Figures: load
seconds (tokenizer included, imports excluded), prefill tok/s of a 512-token prompt, decode tok/s
of 128 greedy tokens after a short prompt and after the 512-token prompt, peak RSS. The parent
prints one JSON line with both sets and the ratios lucidlm / transformers, and a prefill ratio
measured with both models in one process, alternating (`ratio_prefill_tps_paired`), which the
machine's noise moves far less.

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


def measure_lucidlm() -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    import lucidlm
    from lucidlm.generation import PromptCache, generate_tokens

    torch.set_num_threads(2)
    start = time.perf_counter()
    model, tokenizer = lucidlm.load()
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
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_transformers() -> dict:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT))
    from lucidlm.default_model import default_model_path

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    path = default_model_path()
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
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


def measure_prefill_paired(rounds: int = 8) -> dict:
    """Both models in one process, their 512-token prefills alternated, so that the machine's
    noise (which moves separate runs by 20% here) hits both alike. Returns the median ratio."""
    import torch
    import transformers

    sys.path.insert(0, str(ROOT))
    import lucidlm
    from lucidlm.default_model import default_model_path
    from lucidlm.model import KVCache

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    ours, tokenizer = lucidlm.load()
    path = default_model_path()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                               dtype=torch.float32).eval()
    ids = torch.tensor([long_prompt_ids(tokenizer.encode)])

    def ours_prefill() -> None:
        ours(ids, cache=KVCache(ours.config, batch_size=1, capacity=ids.shape[1]), logits_for="last")

    def theirs_prefill() -> None:
        theirs(ids, use_cache=True, logits_to_keep=1)

    ratios = []
    with torch.inference_mode():
        for _ in range(2):  # warm-up: the first forwards of each also pay page faults for new activations
            ours_prefill(), theirs_prefill()
        for r in range(rounds):
            times = {}
            for name, run in ((("ours", ours_prefill), ("theirs", theirs_prefill))[:: 1 if r % 2 == 0 else -1]):
                start = time.perf_counter()
                run()
                times[name] = time.perf_counter() - start
            ratios.append(times["theirs"] / times["ours"])
    return {"prefill_tps_paired": statistics.median(ratios)}


def child(which: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", which], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        result = {"lucidlm": measure_lucidlm, "transformers": measure_transformers,
                  "paired": measure_prefill_paired}[sys.argv[2]]()
        print(json.dumps(result))
        return
    ours, theirs = child("lucidlm"), child("transformers")
    out = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)", "threads": 2, "new_tokens": NEW_TOKENS}
    for key in ours:
        out[f"lucidlm_{key}"] = round(ours[key], 2)
        out[f"transformers_{key}"] = round(theirs[key], 2)
        out[f"ratio_{key}"] = round(ours[key] / theirs[key], 3)
    out["ratio_prefill_tps_paired"] = round(child("paired")["prefill_tps_paired"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
