"""Classification fine-tuning, as in "Build a Large Language Model (from Scratch)" ch. 6: a pretrained
model's LM head replaced by a k-class head, only some parts trained, accuracy measured before and after.

A decoder's head reads its last real token, the only one that has seen the whole text; an encoder's
reads the (pooled) first token. The loop is small and plain: cross-entropy of the head's logits,
AdamW (train/optimizer.py) with warmup and cosine decay (train/schedule.py).
"""

from __future__ import annotations

import sys
from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import LucidError
from ..model.lora import LoRASettings, add_lora
from .labelled import Labelled
from .optimizer import make_optimizer
from .schedule import learning_rate

TRAIN_PARTS = ("last-block", "head", "all", "lora")


def choose_trainable(model, part: str, lora: LoRASettings | None = None) -> int:
    """Freeze all but `part` (TRAIN_PARTS): the head only; the last block, the final norm and the head
    (the book's choice); everything; or LoRA adapters and the head. Returns the trainable count."""
    if part not in TRAIN_PARTS:
        raise LucidError(f"--train must be one of {', '.join(TRAIN_PARTS)} (got {part!r})")
    if part == "lora":
        add_lora(model, lora or LoRASettings())  # freezes every weight, adds trainable adapters
    else:
        for p in model.parameters():
            p.requires_grad_(part == "all")
    trained = [model.lm_head]
    if part == "last-block":
        trained += [model.blocks[-1], model.final_norm] + ([model.pooler] if model.pooler is not None else [])
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encode_text(tokenizer, text: str, causal: bool, max_tokens: int) -> list[int]:
    """A text's ids, its first max_tokens kept; an encoder's wrapped as [CLS] ... [SEP]."""
    cls = getattr(tokenizer, "cls_token_id", None)
    if causal or cls is None:
        return tokenizer.encode(text)[:max_tokens] or [tokenizer.eos_token_id or 0]
    return tokenizer.with_specials(tokenizer.encode_ordinary(text)[:max_tokens - 2])


class LabelledBatches:
    """Records as padded batches: ids (B, T) padded on the right, attention_mask (B, T), labels (B,)."""

    def __init__(self, records: list[Labelled], tokenizer, causal: bool, max_tokens: int) -> None:
        self.ids = [encode_text(tokenizer, r.text, causal, max_tokens) for r in records]
        self.labels = [r.label for r in records]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, rows: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        width = max(len(self.ids[i]) for i in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, :len(self.ids[i])] = torch.tensor(self.ids[i])
            mask[r, :len(self.ids[i])] = 1
        return {"ids": ids.to(device), "mask": mask.to(device),
                "labels": torch.tensor([self.labels[i] for i in rows], device=device)}

    def in_order(self, size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self), size):
            yield self.batch(list(range(start, min(start + size, len(self)))), device)

    def shuffled(self, size: int, seed: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches: a seeded permutation per pass over the records (epoch)."""
        generator = torch.Generator().manual_seed(seed)
        while True:
            order = torch.randperm(len(self), generator=generator).tolist()
            for start in range(0, len(order) - size + 1 if len(order) >= size else 1, size):
                yield self.batch(order[start:start + size], device)


@torch.no_grad()
def predict(model, data: LabelledBatches, batch_size: int = 16) -> list[int]:
    """The predicted label of every record, in order."""
    was_training = model.training
    model.eval()
    out = []
    for batch in data.in_order(batch_size, model.device):
        out += model(batch["ids"], attention_mask=batch["mask"]).argmax(-1).tolist()
    model.train(was_training)
    return out


def accuracy(model, data: LabelledBatches, batch_size: int = 16) -> float:
    return sum(p == y for p, y in zip(predict(model, data, batch_size), data.labels)) / len(data)


def train_classifier(model, data: LabelledBatches, steps: int, batch_size: int, lr: float, seed: int,
                     weight_decay: float = 0.1, on_step=None) -> list[float]:
    """`steps` AdamW steps of cross-entropy on shuffled batches, the learning rate warmed up over the
    first tenth and decayed to a tenth of `lr`; returns the losses. Dropout stays as the model has it."""
    from tqdm import tqdm

    optimizer = make_optimizer(model, lr, weight_decay, (0.9, 0.999), model.device)
    batches = data.shuffled(batch_size, seed, model.device)
    model.train()
    losses = []
    bar = tqdm(range(steps), unit="step", dynamic_ncols=True, file=sys.stderr, desc="training")
    with torch.enable_grad():
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, lr, lr / 10, steps // 10, steps)
            batch = next(batches)
            logits = model(batch["ids"], attention_mask=batch["mask"])  # (B, n_labels)
            loss = F.cross_entropy(logits.float(), batch["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
            if on_step is not None:
                on_step(step + 1, losses[-1])
    model.eval()
    return losses
