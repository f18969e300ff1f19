"""Does instruction tuning do something measurable? The default model before and after LoRA
fine-tuning on lucidlm's small instruction set (lucidlm data instructions), on held-out questions
whose items (countries, words, numbers) no training record uses.

Measured on the held-out records: the response loss (mean cross-entropy of the answer's tokens,
nats/token), exact match of the greedy answer (case, spaces and a final full stop ignored) and
whether the answer contains the expected one anywhere. Prints three held-out questions with both
answers on stderr and one JSON line on stdout.

    python bench/instruction_tuning.py [--steps 300] [--out runs/instructions]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lucidlm.generation import batch_generate, make_sampler
from lucidlm.train.conversations import Renderer
from lucidlm.train.instruction_set import instruction_records, write_records
from lucidlm.weights import default_model_path, load

ANSWER_TOKENS = 24


def normalised(text: str) -> str:
    return text.strip().rstrip(".").strip().casefold()


@torch.no_grad()
def measure(model_path: str, records: list[dict]) -> dict:
    model, tokenizer = load(model_path, dtype="float32")
    renderer = Renderer(tokenizer, "chat")
    examples = [renderer.render(r, "held-out") for r in records]
    losses, counted = 0.0, 0
    for example in examples:
        ids = torch.tensor([example.ids])
        learn = torch.tensor([example.learn[1:]])
        logits = model(ids[:, :-1], logits_for=learn)  # (N, V)
        losses += float(torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][learn], reduction="sum"))
        counted += int(learn.sum())
    answers = batch_generate(model, tokenizer, [e.prompt_ids for e in examples], max_tokens=ANSWER_TOKENS,
                             sampler=make_sampler(temp=0.0))
    answers = [a.replace("<|im_end|>", "").strip() for a in answers]
    exact = [normalised(a) == normalised(r["output"]) for a, r in zip(answers, records)]
    contains = [normalised(r["output"]) in normalised(a) for a, r in zip(answers, records)]
    return {"response_loss": losses / counted, "exact_match": sum(exact) / len(exact),
            "contains": sum(contains) / len(contains), "answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", help="the fine-tuning run folder (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="instructions-"))
    run = args.out or str(folder / "run")
    train, held = instruction_records()
    write_records(folder / "train.jsonl", train)
    base = str(default_model_path())
    before = measure(base, held)
    command = [sys.executable, "-m", "lucidlm", "finetune", "--model", base, "--data", str(folder / "train.jsonl"),
               "--lora", "--rank", "8", "--lora-targets", "q", "k", "v", "o", "gate", "up", "down",
               "--max-iters", str(args.steps), "--batch-size", "8", "--out", run, "--force",
               "--threads", str(args.threads), "--no-plot"]
    tick = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - tick
    after = measure(run, held)
    for record, old, new in list(zip(held, before["answers"], after["answers"]))[::10][:3]:
        print(f"Q: {record['instruction']}\n  expected: {record['output']}\n  before:   {old!r}\n  after:    {new!r}",
              file=sys.stderr)
    result = {"bench": "instruction_tuning", "model": Path(base).name, "train_records": len(train),
              "held_out_records": len(held), "steps": args.steps, "finetune_seconds": round(seconds, 1),
              "command": " ".join(command[1:]).replace(str(folder), "DATA")}
    for name, figures in (("before", before), ("after", after)):
        result.update({f"{name}_{k}": round(v, 4) for k, v in figures.items() if k != "answers"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
