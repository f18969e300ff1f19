"""LoRA fine-tuning speed: lucidlm against peft + transformers on the default model (SmolLM2-135M,
the GGUF file dequantized to float32 by both), the same adapters, batches and optimizer.

Both sides train rank-8 adapters on q, k, v, o, gate, up and down with AdamW on the same batches of
lucidlm's instruction set (8 chat-rendered records, padded on the right, the loss on the answers
only) and clip the gradient norm at 1.0, as `lucidlm finetune` does. Steps run in interleaved
rounds so the machine's noise hits both alike. Two precisions: float32 throughout, and bfloat16
autocast (what `lucidlm finetune` uses where the CPU computes in bfloat16 natively). lucidlm runs
twice: as `lucidlm finetune` does, computing the rows' common beginning once per batch (the chat
template's system prompt: 24 of each row's 49 tokens here; model/shared_prefix.py), and unshared,
every row whole, token for token the work peft does. Prints one JSON line: steps/s per side and
precision, and lucidlm's ratios.

    python bench/finetune.py [--rounds 4] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lucidlm.model.lora import LoRASettings, add_lora  # noqa: E402
from lucidlm.model.shared_prefix import shared_prefix_length  # noqa: E402
from lucidlm.train.conversations import Renderer  # noqa: E402
from lucidlm.train.instruction_set import instruction_records  # noqa: E402
from lucidlm.train.instruction_tuning import InstructionTuning  # noqa: E402
from lucidlm.train.optimizer import make_optimizer  # noqa: E402
from lucidlm.weights import default_model_path, load  # noqa: E402

ROLES = ("q", "k", "v", "o", "gate", "up", "down")
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA, BATCH, LR = 8, 16.0, 8, 2e-4


def batches(tokenizer, count: int) -> list[dict[str, torch.Tensor]]:
    """Batches of BATCH rendered records: inputs, targets, which targets are learned, padding mask."""
    renderer = Renderer(tokenizer, "chat")
    examples = [renderer.render(r, "bench") for r in instruction_records()[0]]
    out = []
    for b in range(count):
        rows = [examples[(b * BATCH + i) % len(examples)] for i in range(BATCH)]
        width = max(len(e.ids) for e in rows)
        ids = torch.zeros(BATCH, width, dtype=torch.long)
        learn = torch.zeros(BATCH, width, dtype=torch.bool)
        mask = torch.zeros(BATCH, width, dtype=torch.long)
        for r, e in enumerate(rows):
            ids[r, :len(e.ids)] = torch.tensor(e.ids)
            learn[r, :len(e.ids)] = torch.tensor(e.learn)
            mask[r, :len(e.ids)] = 1
        labels = ids.masked_fill(~learn, -100)  # transformers' convention: -100 is not learned
        out.append({"ids": ids, "mask": mask, "learn": learn, "labels": labels})
    return out


def update(model, optimizer, loss: torch.Tensor) -> float:
    """What follows the forward on both sides, as in lucidlm's trainer: backward, clip, step."""
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def lucidlm_step(model, optimizer, objective: InstructionTuning | None):
    """With the objective: its own loss, what `lucidlm finetune` computes (the rows' shared
    beginning once). Without: the same loss with every row computed whole."""
    def step(batch):
        sft = {"inputs": batch["ids"][:, :-1], "targets": batch["ids"][:, 1:], "learn": batch["learn"][:, 1:],
               "share": torch.tensor(1.0)}
        if objective is not None:
            return update(model, optimizer, objective.loss(model, sft))
        logits = model(sft["inputs"], logits_for=sft["learn"])  # right padding needs no mask under the causal one
        return update(model, optimizer, F.cross_entropy(logits.float(), sft["targets"][sft["learn"]]))
    return step


def peft_step(model, optimizer):
    def step(batch):
        loss = model(input_ids=batch["ids"], attention_mask=batch["mask"], labels=batch["labels"]).loss
        return update(model, optimizer, loss)
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="steps per side per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers
    from peft import LoraConfig, get_peft_model

    transformers.logging.set_verbosity_error()
    path = default_model_path()
    ours, tokenizer = load(path, dtype="float32")
    torch.manual_seed(0)
    add_lora(ours, LoRASettings(rank=RANK, alpha=ALPHA, roles=ROLES))
    ours.train()
    hf = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    theirs = get_peft_model(hf, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=HF_TARGETS))
    theirs.train()
    trainable = (sum(p.numel() for p in ours.parameters() if p.requires_grad),
                 sum(p.numel() for p in theirs.parameters() if p.requires_grad))
    # lucidlm twice: as `lucidlm finetune` runs, and without the shared prefix, which shows what
    # computing the system prompt once per batch is worth (each with its own adapters and optimizer)
    unshared = copy.deepcopy(ours)
    objective = InstructionTuning(tokenizer, SimpleNamespace(prompt_format="chat", train_on_prompt=False))
    sides = {"lucidlm": lucidlm_step(ours, make_optimizer(ours, LR, 0.0, (0.9, 0.999), torch.device("cpu")), objective),
             "lucidlm_unshared": lucidlm_step(unshared, make_optimizer(unshared, LR, 0.0, (0.9, 0.999),
                                                                       torch.device("cpu")), None),
             "peft": peft_step(theirs, make_optimizer(theirs, LR, 0.0, (0.9, 0.999), torch.device("cpu")))}
    data = batches(tokenizer, args.rounds * args.steps + 1)
    precisions = {"fp32": contextlib.nullcontext, "bf16_autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    seconds = {(name, p): [] for name in sides for p in precisions}
    first_loss = {}
    for precision, context in precisions.items():
        for name, step in sides.items():  # warm-up: allocator, kernels, the optimizer's state
            with context():
                first_loss[(name, precision)] = step(data[0])
        for r in range(args.rounds):
            for name, step in (list(sides.items()) if r % 2 == 0 else reversed(list(sides.items()))):
                tick = time.perf_counter()
                with context():
                    for s in range(args.steps):
                        step(data[1 + r * args.steps + s])
                seconds[(name, precision)].append((time.perf_counter() - tick) / args.steps)
    result = {"bench": "finetune", "model": path.name, "threads": args.threads, "batch": BATCH,
              "rank": RANK, "targets": list(ROLES), "trainable": {"lucidlm": trainable[0], "peft": trainable[1]},
              "tokens_per_batch": int(data[1]["mask"].sum()),
              "shared_prefix": shared_prefix_length(data[1]["ids"][:, :-1]),
              "first_loss": {f"{n}_{p}": round(v, 4) for (n, p), v in first_loss.items()}}
    for precision in precisions:
        rates = {name: 1.0 / statistics.median(seconds[(name, precision)]) for name in sides}
        result[f"{precision}_steps_per_s"] = {name: round(v, 3) for name, v in rates.items()}
        result[f"{precision}_ratio"] = round(rates["lucidlm"] / rates["peft"], 2)
        result[f"{precision}_ratio_unshared"] = round(rates["lucidlm_unshared"] / rates["peft"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
