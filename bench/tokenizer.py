"""Tokenizer speed, one thread, same run: lucidlm against `tokenizers` (SmolLM2's tokenizer) and
`tiktoken` (GPT-2), one long piece of a repeated character (10k, 100k, 1M), and BPE training
against `tokenizers`' BpeTrainer. Prints one JSON line.

Encode throughput is in MB/s of UTF-8 input, as one call and line by line, with lucidlm's piece
cache warm (the steady state of a long-running process). Training: a 4096-token vocabulary on
tinyshakespeare.

    python bench/tokenizer.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"  # tokenizers' thread pool: one thread, as the issue asks
os.environ["TOKENIZERS_PARALLELISM"] = "false"

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPORA = {"shakespeare": ROOT / "data" / "tinyshakespeare.txt", "mixed": ROOT / "data" / "mixed_code_unicode.txt"}


def rate(encode, text: str, repeat: int = 3) -> float:
    """MB/s, the median of `repeat` timed runs after one warm-up."""
    encode(text)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        encode(text)
        times.append(time.perf_counter() - start)
    return len(text.encode("utf-8")) / 1e6 / statistics.median(times)


def lines_of(encode):
    def run(text: str) -> None:
        for line in text.splitlines(keepends=True):
            encode(line)
    return run


def smollm_pair():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers

    from lucidlm import Tokenizer
    from lucidlm.default_model import default_model_path
    from lucidlm.gguf_file import read_metadata

    path = default_model_path()
    meta = read_metadata(path)
    reference = HFTokenizer(models.BPE({t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])},
                                       [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]))
    reference.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                       pre_tokenizers.ByteLevel(add_prefix_space=False)])
    reference.decoder = decoders.ByteLevel()
    return Tokenizer.from_file(path), reference


def gpt2_pair():
    import tiktoken
    import tiktoken.load

    from lucidlm import Tokenizer
    from lucidlm.tokenizer.pretokenizer import GPT2_PATTERN

    path = ROOT / "data" / "gpt2.tiktoken"
    reference = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(path)),
                                  special_tokens={"<|endoftext|>": 50256})
    return Tokenizer.from_file(path), reference


def repeated_characters(ours, theirs) -> dict:
    """One long piece (a run of one character, as in base64, '====' rules, minified code): seconds
    to encode 10k, 100k and 1M of them, with lucidlm's piece cache cold. Linear growth means each
    10x costs about 10x (the old quadratic merge took 60 s+ for 100k)."""
    out = {}
    for char in ("a", "="):
        for n in (10_000, 100_000, 1_000_000):
            text = char * n
            ours._cache.clear()
            start = time.perf_counter()
            ids = ours.encode(text)
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            expected = theirs.encode(text).ids
            theirs_s = time.perf_counter() - start
            assert ids == expected, (char, n)
            key = f"repeat_{'a' if char == 'a' else 'equals'}_{n}"
            out[f"{key}_lucidlm_s"], out[f"{key}_tokenizers_s"] = round(ours_s, 4), round(theirs_s, 4)
        name = "a" if char == "a" else "equals"
        out[f"repeat_{name}_growth_100k_to_1m"] = round(out[f"repeat_{name}_1000000_lucidlm_s"] /
                                                       out[f"repeat_{name}_100000_lucidlm_s"], 1)
    return out


def training(text: str) -> dict:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    from lucidlm import Tokenizer

    start = time.perf_counter()
    Tokenizer.train(text, 4096, pattern="gpt2", special_tokens=["<|endoftext|>"])
    ours = time.perf_counter() - start
    reference = HFTokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    start = time.perf_counter()
    reference.train_from_iterator([text], trainer)
    theirs = time.perf_counter() - start
    return {"train_4096_lucidlm_s": round(ours, 3), "train_4096_tokenizers_s": round(theirs, 3),
            "train_ratio_time": round(ours / theirs, 2)}


def main() -> None:
    out: dict = {"threads": 1}
    ours, theirs = smollm_pair()
    gpt2, tiktoken_gpt2 = gpt2_pair()
    for name, path in CORPORA.items():
        text = path.read_text(encoding="utf-8")
        assert ours.encode(text) == theirs.encode(text).ids and gpt2.encode(text) == tiktoken_gpt2.encode_ordinary(text)
        figures = {
            "smollm_lucidlm": rate(ours.encode, text), "smollm_tokenizers": rate(lambda t: theirs.encode(t).ids, text),
            "smollm_lucidlm_lines": rate(lines_of(ours.encode), text),
            "smollm_tokenizers_lines": rate(lines_of(lambda t: theirs.encode(t).ids), text),
            "gpt2_lucidlm": rate(gpt2.encode, text), "gpt2_tiktoken": rate(tiktoken_gpt2.encode_ordinary, text),
            "gpt2_lucidlm_lines": rate(lines_of(gpt2.encode), text),
            "gpt2_tiktoken_lines": rate(lines_of(tiktoken_gpt2.encode_ordinary), text),
        }
        for key, value in figures.items():
            out[f"{name}_{key}_mb_s"] = round(value, 2)
        out[f"{name}_ratio_vs_tokenizers"] = round(figures["smollm_lucidlm"] / figures["smollm_tokenizers"], 2)
        out[f"{name}_ratio_vs_tokenizers_lines"] = round(figures["smollm_lucidlm_lines"] /
                                                        figures["smollm_tokenizers_lines"], 2)
        out[f"{name}_ratio_vs_tiktoken"] = round(figures["gpt2_lucidlm"] / figures["gpt2_tiktoken"], 2)
        out[f"{name}_ratio_vs_tiktoken_lines"] = round(figures["gpt2_lucidlm_lines"] / figures["gpt2_tiktoken_lines"], 2)
    out.update(repeated_characters(ours, theirs))
    out.update(training(CORPORA["shakespeare"].read_text(encoding="utf-8")))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
