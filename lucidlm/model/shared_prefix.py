"""A shared prefix: the leading tokens that every row of a batch has in common, computed once.

Fine-tuning batches often begin alike: SmolLM2's chat template puts the same system prompt before
every conversation, about half of a short record's tokens. A causal model computes the same
states for those tokens in every row, so a forward that knows the prefix packs the batch into one
sequence, [prefix | row 1's rest | row 2's rest | ...], and runs every per-token layer (norms,
projections, MLP) on P + B (T - P) tokens instead of B T. Only attention sees the layout: the
prefix attends to itself, causally; each row's rest attends to the prefix and to its own earlier
tokens (`Attention.attend_shared`). The outputs are unpacked to (B, T, C) and equal the plain
forward's up to float rounding (a test holds them to it); the prefix's gradient is the sum over
the rows, through `expand`.

Dropout, when training with it, draws one mask for the prefix that all rows share.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class SharedPrefix(NamedTuple):
    length: int  # P: the leading tokens every row shares
    rows: int  # B
    row_length: int  # T: each row's tokens, the prefix included

    @property
    def rest(self) -> int:
        """Each row's tokens after the prefix."""
        return self.row_length - self.length

    def pack(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, T) -> the packed ids (1, P + B (T - P)) and their positions (same shape):
        the prefix once at 0..P-1, then each row's rest at P..T-1."""
        P, T = self.length, self.row_length
        ids = torch.cat((input_ids[0, :P], input_ids[:, P:].reshape(-1)))[None]
        device = input_ids.device
        positions = torch.cat((torch.arange(P, device=device),
                               torch.arange(P, T, device=device).repeat(self.rows)))[None]
        return ids, positions

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """The packed states (1, P + B (T - P), ...) -> each row's (B, T, ...), the prefix repeated."""
        prefix, rest = x[0].split([self.length, self.rows * self.rest])
        rows = rest.view(self.rows, self.rest, *rest.shape[1:])
        return torch.cat((prefix.expand(self.rows, *prefix.shape), rows), dim=1)

    def split_heads(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed heads (1, heads, P + B (T - P), D) -> the prefix's (1, heads, P, D) and the rows'
        rests (B, heads, T - P, D)."""
        prefix, rest = t.split([self.length, self.rows * self.rest], dim=2)
        heads, D = t.shape[1], t.shape[3]
        return prefix, rest.reshape(heads, self.rows, self.rest, D).transpose(0, 1)

    def join_heads(self, prefix: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        """split_heads' inverse for attention outputs: (1, H, P, D) and (B, H, T - P, D) -> (1, L, H, D),
        the packed sequence with its heads, as the output projection reads it."""
        H, D = prefix.shape[1], prefix.shape[3]
        rows = rest.transpose(1, 2).reshape(1, self.rows * self.rest, H, D)
        return torch.cat((prefix.transpose(1, 2), rows), dim=1)


def shared_prefix_length(input_ids: torch.Tensor) -> int:
    """How many leading tokens all rows of input_ids (B, T) share; 0 for a single row, where there
    is nothing to share. A position's output depends only on the tokens up to it, so the prefix's
    states are the same in every row, whichever of them a loss reads."""
    B, T = input_ids.shape
    if B < 2:
        return 0
    differs = (input_ids != input_ids[:1]).any(dim=0).nonzero()  # the columns where some row differs
    # T - 1 at most, so that every row keeps a token of its own
    return min(int(differs[0]) if len(differs) else T, T - 1)


# A prefix is shared when that saves at least this fraction of the batch's tokens. Below it the
# saving is small and the rows' attention costs more: their queries meet the prefix's keys through
# an explicit mask, where the plain forward's causal kernel skips the upper triangle.
WORTH_SHARING = 0.1


def prefix_to_share(model, input_ids: torch.Tensor) -> int:
    """The shared prefix a training forward of input_ids (B, T) should use: its length, or 0 when
    the model cannot share one or sharing saves too little. CPU only: on CUDA, masked attention
    with grouped key/value heads falls to the math kernel and its (T, T) weights (untested here)."""
    core = getattr(model, "module", model)  # under DistributedDataParallel
    if core.device.type != "cpu" or core.shared_prefix_refusal() is not None:
        return 0
    P = shared_prefix_length(input_ids)
    B, T = input_ids.shape
    return P if P * (B - 1) >= WORTH_SHARING * B * T else 0
