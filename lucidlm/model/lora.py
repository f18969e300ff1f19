"""LoRA: low-rank adapters beside frozen linear layers (Hu et al. 2021, https://arxiv.org/abs/2106.09685).

An adapted layer computes y = W x + (alpha / r) B A dropout(x), with A (r, in) random and B (out, r)
zero, so an adapted model starts exactly where its base model is and only A and B learn. Our fused
matrices (q|k|v, gate|up) get one adapter per part, as the separate q_proj, k_proj, ... of the
Hugging Face layout do, so PEFT's adapter files map onto ours one to one. Merging folds B A into W.
peft's tuners/lora/layer.py wraps a base layer the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FUSED_PARTS
from ..errors import LucidError
from .quant import HoldsQuantized

# A role names one matrix of a block, as the course and PEFT's target_modules do: (our module, its part).
ROLES = {"q": ("attn.qkv", "q"), "k": ("attn.qkv", "k"), "v": ("attn.qkv", "v"), "o": ("attn.out", None),
         "gate": ("mlp.up", "gate"), "up": ("mlp.up", "up"), "down": ("mlp.down", None)}
WHOLE = "whole"  # the part name of an adapter that covers a whole matrix


@dataclass(frozen=True)
class LoRASettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    roles: tuple[str, ...] = ("q", "v")  # the LoRA paper's choice, and peft's default for Llama
    rslora: bool = False  # scale by alpha / sqrt(rank) (Kalajdzievski 2023) instead of alpha / rank

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def check(self) -> None:
        if self.rank < 1:
            raise LucidError(f"the LoRA rank must be at least 1 (got {self.rank})")
        if not 0 <= self.dropout < 1:
            raise LucidError(f"the LoRA dropout must be in [0, 1) (got {self.dropout})")
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown or not self.roles:
            raise LucidError(f"unknown LoRA target(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose among {', '.join(ROLES)}")


class LoRALinear(nn.Module):
    """A frozen linear layer (dense or quantized) plus one low-rank adapter per chosen part of its
    output rows. `parts`: part name -> (start, stop) output rows; a whole matrix is one part."""

    def __init__(self, base: nn.Module, parts: dict[str, tuple[int, int]], settings: LoRASettings) -> None:
        super().__init__()
        self.base = base
        # subtle: parts in row order, so the parameters' order (which an optimizer's saved state
        # follows) is the same however the parts were listed (by the user, or by a file).
        self.parts = dict(sorted(parts.items(), key=lambda item: item[1][0]))
        self.settings = settings
        self.rank, self.scale = settings.rank, settings.scale
        self._factors: tuple | None = None  # (versions of the adapters, (A, B)) while generating
        self.dropout = nn.Dropout(settings.dropout)
        held = [*base.parameters(), *base.buffers()]
        device = held[0].device if held else torch.device("cpu")  # a quantized layer lives on the CPU
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for part, (start, stop) in self.parts.items():
            a = torch.empty(settings.rank, base.in_features, device=device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # nn.Linear's (and peft's) init for A
            self.lora_A[part] = nn.Parameter(a)
            self.lora_B[part] = nn.Parameter(torch.zeros(stop - start, settings.rank, device=device))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The base matrix (out, in), without the adapters (merge() folds them in)."""
        return self.base.weight

    def factors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The adapters as one low-rank pair: A (P r, in), every part's A stacked, and B (out, P r),
        holding scale * B_p at its part's rows and column block, zeros elsewhere. Then scale * B_p A_p x
        placed at rows start:stop, summed over the parts P, is B (A x): two small products for a fused
        q|k|v instead of six and a concatenation of outputs.

        Without gradients (generation) the pair is kept until an adapter changes (its version
        counter moves), so decoding a token does not rebuild it in every layer."""
        key = (dtype, *(p._version for p in self.lora_A.values()), *(p._version for p in self.lora_B.values()))
        if torch.is_grad_enabled() or self._factors is None or self._factors[0] != key:
            if len(self.parts) == 1 and next(iter(self.parts.values())) == (0, self.out_features):
                a, b = next(iter(self.lora_A.values())), next(iter(self.lora_B.values()))  # a whole matrix: as they are
            else:
                a = torch.cat(list(self.lora_A.values()))  # (P r, in), parts in row order
                # each B_p (rows, r) padded with zero rows above and below to (out, r), side by side: (out, P r)
                b = torch.cat([F.pad(self.lora_B[part], (0, 0, start, self.out_features - stop))
                               for part, (start, stop) in self.parts.items()], dim=1)
            pair = a.to(dtype), (b * self.scale).to(dtype)
            if torch.is_grad_enabled():  # a training step's pair belongs to its own graph
                return pair
            self._factors = key, pair
        return self._factors[1]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The plain path: the adapters' share of the output, (..., out), part by part, zero on rows
        no adapter covers. forward() computes base(x) + delta(x) faster (a test holds them equal)."""
        x = self.dropout(x)
        out = x.new_zeros(*x.shape[:-1], self.out_features)
        for part, (start, stop) in self.parts.items():
            low = F.linear(x, self.lora_A[part].to(x.dtype))  # (..., r)
            out[..., start:stop] = F.linear(low, self.lora_B[part].to(x.dtype)) * self.scale
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.factors(x.dtype)
        low = F.linear(self.dropout(x) if self.dropout.p > 0 else x, a)  # (..., P r)
        out = self.base(x)  # (..., out)
        # base + B low in one GEMM that accumulates into the base's output (no extra pass over it)
        return torch.addmm(out.reshape(-1, out.shape[-1]), low.reshape(-1, low.shape[-1]), b.t()).view(out.shape)

    @torch.no_grad()
    def folded_weight(self) -> torch.Tensor:
        """W with scale * B A added to each part's rows, (out, in): the merged matrix, as a new tensor."""
        weight = self.base.weight.detach().clone()
        for part, (start, stop) in self.parts.items():
            weight[start:stop] += (self.lora_B[part] @ self.lora_A[part]).to(weight.dtype) * self.scale
        return weight

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """The base layer with B A folded into its weight."""
        if isinstance(self.base, HoldsQuantized):
            raise LucidError("adapters fold only into float weights: load the model with --dtype float32 to merge")
        self.base.weight.copy_(self.folded_weight())  # a view of the stored parameter: the copy reaches it
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scale={self.scale:g}, parts={list(self.parts)}"


def adapted_modules(model, roles: tuple[str, ...]) -> dict[str, dict[str, tuple[int, int]]]:
    """Which of the model's linear layers the roles reach: module path -> {part: (start, stop)}.
    Only the decoder's (or a single stack's) blocks are adapted, never the embedding or the head."""
    config = model.config
    chosen: dict[str, dict[str, tuple[int, int]]] = {}
    for i in range(config.n_layers):
        for role in roles:
            module, part = ROLES[role]
            if module == "mlp.up" and not config.gated_mlp:
                part = None  # a plain MLP's up is one matrix; it has no gate
                if role == "gate":
                    raise LucidError("this model's MLP has no gate (it is not a gated MLP): drop 'gate' from the targets")
            rows = config.part_rows(module)[part] if module in FUSED_PARTS and part is not None \
                else (0, model.get_submodule(f"blocks.{i}.{module}").out_features)
            chosen.setdefault(f"blocks.{i}.{module}", {})[part or WHOLE] = rows
    return chosen


def add_lora(model, settings: LoRASettings) -> int:
    """Freeze the model and wrap the chosen layers with fresh adapters; returns the number of
    trainable parameters. The model's outputs are unchanged until the adapters learn (B = 0)."""
    settings.check()
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise LucidError("this model already has adapters")
    chosen = adapted_modules(model, settings.roles)  # first: a refusal leaves the model as it was
    for p in model.parameters():
        p.requires_grad_(False)
    for path, parts in chosen.items():
        model.set_submodule(path, LoRALinear(model.get_submodule(path), parts, settings).train(model.training))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_layers(model) -> dict[str, LoRALinear]:
    return {path: m for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model) -> None:
    """Fold every adapter into its base weight and drop the adapters: a plain model that computes
    the same function (up to rounding), saved and loaded like any other."""
    for path, layer in lora_layers(model).items():
        model.set_submodule(path, layer.merged())
