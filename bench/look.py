"""What looking inside costs: one 512-token forward of SmolLM2-135M (fp32, 2 threads) plain, with
attention probed on one layer, and on every layer; and transformers' plain forward against
`output_attentions=True` (which needs its eager attention in every layer), in the same process,
interleaved in rounds so the machine's noise hits all alike. Prints one JSON line; the ratios are
each way's median time over its own plain forward's.

    python bench/look.py
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
TOKENS, ROUNDS, PROBED_LAYER = 512, 5, 15


def main() -> None:
    import transformers

    import lucidlm
    from lucidlm.default_model import default_model_path

    torch.set_num_threads(2)
    transformers.logging.set_verbosity_error()
    model, tokenizer = lucidlm.load()
    text = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")[:8000]
    ids = torch.tensor([tokenizer.encode(text)[:TOKENS]])
    path = default_model_path()
    theirs = {impl: transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                                      dtype=torch.float32, attn_implementation=impl).eval()
              for impl in ("sdpa", "eager")}

    def probed(layers):
        def run():
            with lucidlm.probe(model, attention=layers):
                model(ids, logits_for="last")
        return run

    ways = {
        "lucidlm_plain": lambda: model(ids, logits_for="last"),
        "lucidlm_probe_1_layer": probed([PROBED_LAYER]),
        "lucidlm_probe_all_layers": probed("all"),
        "transformers_plain_sdpa": lambda: theirs["sdpa"](ids, logits_to_keep=1),
        "transformers_output_attentions_eager": lambda: theirs["eager"](ids, logits_to_keep=1, output_attentions=True),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with torch.inference_mode():
        for name, run in ways.items():  # warm-up: first forwards also pay for page faults
            run()
        for r in range(ROUNDS):
            for name, run in (list(ways.items()) if r % 2 == 0 else list(ways.items())[::-1]):
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    out = {"model": "SmolLM2-135M-Instruct fp32", "threads": 2, "tokens": TOKENS, "rounds": ROUNDS}
    out.update({f"{name}_s": round(value, 4) for name, value in median.items()})
    out["ratio_probe_1_layer"] = round(median["lucidlm_probe_1_layer"] / median["lucidlm_plain"], 3)
    out["ratio_probe_all_layers"] = round(median["lucidlm_probe_all_layers"] / median["lucidlm_plain"], 3)
    out["ratio_transformers_output_attentions"] = round(median["transformers_output_attentions_eager"] /
                                                        median["transformers_plain_sdpa"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
