"""A 3-turn conversation with the default model: time to first token per turn and decode speed,
lucidlm (which reuses the KV cache across turns) against transformers (its own KV cache within
a turn, the whole conversation prefilled each turn), same run, 2 threads, greedy. One JSON line.

    python bench/chat.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUESTIONS = ["Write a short story about Einstein.", "Make it shorter.", "Now give it a title."]
ANSWER_TOKENS = 48


def lucidlm_turns() -> tuple[list[dict], list[list[dict]]]:
    import lucidlm
    from lucidlm.generation import PromptCache, stream_generate

    model, tokenizer = lucidlm.load()
    cache = PromptCache(model)
    messages, turns, conversations = [], [], []
    for question in QUESTIONS:
        messages.append({"role": "user", "content": question})
        conversations.append([dict(m) for m in messages])
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        start = time.perf_counter()
        first, pieces, response = None, [], None
        for response in stream_generate(model, tokenizer, ids, max_tokens=ANSWER_TOKENS, prompt_cache=cache):
            if first is None:
                first = time.perf_counter() - start
            pieces.append(response.text)
        turns.append({"ttft_s": first, "prompt_tokens": len(ids), "prefilled": cache.last_prefill,
                      "decode_tps": response.generation_tps})
        messages.append({"role": "assistant", "content": "".join(pieces)})
    return turns, conversations


def transformers_turns(conversations: list[list[dict]], answers: list[str]) -> list[dict]:
    import transformers

    from lucidlm.default_model import default_model_path

    transformers.logging.set_verbosity_error()
    path = default_model_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    turns = []
    for messages in conversations:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = ids["input_ids"]
        with torch.inference_mode():
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=1, do_sample=False)
            ttft = time.perf_counter() - start
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=ANSWER_TOKENS, do_sample=False)
            total = time.perf_counter() - start
        generated = out.shape[1] - ids.shape[1]
        turns.append({"ttft_s": ttft, "prompt_tokens": ids.shape[1],
                      "decode_tps": (generated - 1) / max(total - ttft, 1e-9)})
    return turns


def main() -> None:
    torch.set_num_threads(2)
    ours, conversations = lucidlm_turns()
    theirs = transformers_turns(conversations, [])
    out = {"turns": len(QUESTIONS), "answer_tokens": ANSWER_TOKENS, "threads": 2}
    for i, (a, b) in enumerate(zip(ours, theirs), 1):
        out[f"turn{i}_prompt_tokens"] = a["prompt_tokens"]
        out[f"turn{i}_lucidlm_prefilled"] = a["prefilled"]
        out[f"turn{i}_lucidlm_ttft_s"] = round(a["ttft_s"], 3)
        out[f"turn{i}_transformers_ttft_s"] = round(b["ttft_s"], 3)
        out[f"turn{i}_ttft_ratio"] = round(a["ttft_s"] / b["ttft_s"], 3)
        out[f"turn{i}_lucidlm_decode_tps"] = round(a["decode_tps"], 1)
        out[f"turn{i}_transformers_decode_tps"] = round(b["decode_tps"], 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
