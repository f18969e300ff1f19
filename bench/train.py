"""Training speed and quality: lucidlm's shakespeare-char preset against nanoGPT's CPU example.

nanoGPT is not installable here (it is a repository, not a package), so the peer is a plain-PyTorch
GPT written for this benchmark with nanoGPT's architecture and loop: nn.Linear/nn.LayerNorm without
biases, fused causal SDPA, exact GELU, tied head, N(0, 0.02) init with scaled residual projections,
AdamW (0.9, 0.99) with decay on matrices, warmup + cosine, clipping at 1.0. Both train the same
batches in the same process, interleaved in rounds so the machine's noise hits both alike.

Then lucidlm runs the whole 2000-iteration benchmark through its real trainer (`lucidlm train`
code path) and reports its final losses. Prints one JSON line.

    python bench/train.py                  # rounds + lucidlm's full run (~2-3 minutes)
    python bench/train.py --full-reference # also the reference's full run, for its final loss
    python bench/train.py --seeds 3        # also both full runs for 3 seeds: mean losses (~10 minutes)

Losses: `*_val_loss` is the 20-batch estimate nanoGPT prints; `*_val_loss_whole_split` is the exact
loss over the whole validation split (float32), which is what the seed sweep compares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CORPUS = ROOT / "data" / "tinyshakespeare.txt"
BATCH, WINDOW, LAYERS, HEADS, WIDTH, ITERS = 12, 64, 4, 4, 128, 2000
NANOGPT_DOCUMENTED = {"ms_per_iter": 29.3, "val_loss": 1.886, "train_loss": 1.765}


class ReferenceBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH, bias=False)
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.c_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        self.ln_2 = nn.LayerNorm(WIDTH, bias=False)
        self.c_fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.mlp_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class ReferenceGPT(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, WIDTH)
        self.wpe = nn.Embedding(WINDOW, WIDTH)
        self.blocks = nn.ModuleList(ReferenceBlock() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.head = nn.Linear(WIDTH, vocab, bias=False)
        self.head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * LAYERS) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.logits(idx)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def nanogpt_lr(step: int) -> float:
    if step < 100:
        return 1e-3 * (step + 1) / 101
    progress = (step - 100) / (ITERS - 100)
    return 1e-4 + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (1e-3 - 1e-4)


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, lr_at, loss_of, autocast=contextlib.nullcontext):
    """One training step: schedule, forward (under autocast), backward, clip, update."""
    step_no = [0]

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step_no[0])
        with autocast():
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_no[0] += 1
        return float(loss.detach())

    return step


def reference_step_fn(model: ReferenceGPT):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))  # nanoGPT uses the fused kernel only on CUDA
    return make_step(model, opt, nanogpt_lr, model)


def lucid_step_fn(model):
    from lucidlm.train.optimizer import make_optimizer
    from lucidlm.train.schedule import learning_rate
    from lucidlm.train.loss import masked_loss
    from lucidlm.train.trainer import autocast_context

    opt = make_optimizer(model, 1e-3, 0.1, (0.9, 0.99), torch.device("cpu"))
    return make_step(model, opt, lambda step: learning_rate(step, 1e-3, 1e-4, 100, ITERS),
                     lambda x, y: masked_loss(model(x), y, torch.ones_like(y, dtype=torch.bool)),
                     autocast_context(torch.device("cpu"), "auto"))  # as the trainer does


def batches(data: torch.Tensor, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ix = torch.randint(len(data) - WINDOW, (BATCH,), generator=g)
        yield torch.stack([data[i:i + WINDOW] for i in ix]), torch.stack([data[i + 1:i + 1 + WINDOW] for i in ix])


def timed_rounds(rounds: int, per_round: int) -> dict:
    from lucidlm import PRESETS, Transformer
    from lucidlm.tokenizer import CharTokenizer

    text = CORPUS.read_text(encoding="utf-8")
    tok = CharTokenizer(text)
    data = torch.tensor(tok.encode(text), dtype=torch.long)
    torch.manual_seed(1337)
    ours, ref = Transformer(PRESETS["shakespeare-char"].replace(vocab_size=tok.vocab_size)), ReferenceGPT(tok.vocab_size)
    steps = {"lucidlm": lucid_step_fn(ours.train()), "reference": reference_step_fn(ref.train())}
    times = {"lucidlm": [], "reference": []}
    for r in range(rounds):
        for name in (("lucidlm", "reference") if r % 2 == 0 else ("reference", "lucidlm")):
            stream = list(batches(data, per_round + 3, seed=r))
            for x, y in stream[:3]:  # warm up
                steps[name](x, y)
            start = time.perf_counter()
            for x, y in stream[3:]:
                steps[name](x, y)
            times[name].append((time.perf_counter() - start) / per_round * 1000)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}  # median over rounds


def split_tokens(encode) -> tuple[torch.Tensor, torch.Tensor]:
    """nanoGPT's split of the corpus: the first 90% trains, the rest validates."""
    data = torch.tensor(encode(CORPUS.read_text(encoding="utf-8")), dtype=torch.long)
    n = int(0.9 * len(data))
    return data[:n], data[n:]


@torch.no_grad()
def whole_split_loss(logits_of, tokens: torch.Tensor) -> float:
    """Mean next-token loss over every full, non-overlapping window of a split, in float32.

    The 20-batch estimate that nanoGPT prints (and our trainer logs) samples about 15k of the
    split's 111k targets, so two runs of the same quality differ by about 0.01 on it; this is exact.
    """
    n = (len(tokens) - 1) // WINDOW
    x = tokens[: n * WINDOW].view(n, WINDOW)
    y = tokens[1: n * WINDOW + 1].view(n, WINDOW)
    total = sum(float(F.cross_entropy(logits_of(x[i:i + 48]).flatten(0, 1).float(), y[i:i + 48].flatten(),
                                      reduction="sum")) for i in range(0, n, 48))
    return total / y.numel()


def full_reference_run(seed: int = 1337) -> dict:
    from lucidlm.tokenizer import CharTokenizer

    tok = CharTokenizer(CORPUS.read_text(encoding="utf-8"))
    train, val = split_tokens(tok.encode)
    torch.manual_seed(seed)
    model = ReferenceGPT(tok.vocab_size).train()
    step = reference_step_fn(model)
    start = time.perf_counter()
    for x, y in batches(train, ITERS, seed=seed):
        step(x, y)
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        losses = {name: sum(float(model(x, y)) for x, y in batches(split, 20, seed=7)) / 20
                  for name, split in (("train", train), ("val", val))}
    return {"ms_per_iter": seconds / ITERS * 1000, "val_loss": losses["val"], "train_loss": losses["train"],
            "val_loss_whole_split": whole_split_loss(model.logits, val)}


def lucid_full_run(seed: int = 1337) -> dict:
    from lucidlm.train.settings import TRAIN_PRESETS, TrainSettings
    from lucidlm.config import PRESETS
    from lucidlm.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        settings = TrainSettings.from_dict({**TrainSettings().to_dict(), **TRAIN_PRESETS["shakespeare-char"],
                                            "data": [str(CORPUS)], "out": f"{tmp}/run", "preset": "shakespeare-char",
                                            "seed": seed, "checkpoint_interval": 0, "sample_tokens": 0, "plot": False})
        start = time.perf_counter()
        trainer = Trainer(settings, PRESETS["shakespeare-char"])
        result = trainer.fit()
        result["wall_seconds"] = time.perf_counter() - start
        model = trainer.model.eval()
        _, val = split_tokens(trainer.tokenizer.encode)
        result["val_loss_whole_split"] = whole_split_loss(model, val)
        trainer.close()
    return result


def seed_sweep(seeds: int) -> dict:
    """Both full runs for several seeds: final validation losses are noisy from seed to seed
    (about +-0.01), so quality is compared on their means over the whole validation split."""
    ours = [lucid_full_run(1337 + i)["val_loss_whole_split"] for i in range(seeds)]
    theirs = [full_reference_run(1337 + i)["val_loss_whole_split"] for i in range(seeds)]
    summary = lambda xs: {"mean": round(sum(xs) / len(xs), 4), "min": round(min(xs), 4),
                          "max": round(max(xs), 4)}
    return {"seeds": seeds, "lucidlm_val_loss_whole_split": summary(ours),
            "reference_val_loss_whole_split": summary(theirs)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--full-reference", action="store_true")
    parser.add_argument("--skip-full", action="store_true", help="only the interleaved timing rounds")
    parser.add_argument("--seeds", type=int, default=0,
                        help="also train both models fully with this many seeds and compare mean losses")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from lucidlm.train.trainer import autocast_context

    out: dict = {"threads": 2, "torch": torch.__version__,
                 "lucidlm_autocast_bf16": autocast_context(torch.device("cpu"), "auto") is not contextlib.nullcontext}
    medians = timed_rounds(args.rounds, args.per_round)
    out["ms_per_iter_lucidlm"] = round(medians["lucidlm"], 2)
    out["ms_per_iter_reference"] = round(medians["reference"], 2)
    out["ratio_time_lucidlm_over_reference"] = round(medians["lucidlm"] / medians["reference"], 3)
    if not args.skip_full:
        result = lucid_full_run()
        out.update(lucidlm_full_ms_per_iter=result["ms_per_iter"], lucidlm_tokens_per_s=round(
            BATCH * WINDOW / (result["ms_per_iter"] / 1000)), lucidlm_val_loss=round(result["final_val_loss"], 4),
            lucidlm_train_loss=round(result["final_train_loss"], 4), lucidlm_wall_seconds=round(result["wall_seconds"], 1),
            lucidlm_val_loss_whole_split=round(result["val_loss_whole_split"], 4))
    if args.full_reference:
        ref = full_reference_run()
        out.update(reference_full_ms_per_iter=round(ref["ms_per_iter"], 2), reference_val_loss=round(ref["val_loss"], 4),
                   reference_train_loss=round(ref["train_loss"], 4),
                   reference_val_loss_whole_split=round(ref["val_loss_whole_split"], 4))
    if args.seeds:
        out["seed_sweep"] = seed_sweep(args.seeds)
    out["nanogpt_documented"] = NANOGPT_DOCUMENTED
    print(json.dumps(out))


if __name__ == "__main__":
    main()
