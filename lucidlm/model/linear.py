"""Linear maps, the token embedding and the LM head: the one place that knows how matrices are stored.

Everywhere else (state dicts, name tables, checkpoints, export, `layer.weight`) a matrix has the
standard layout: nn.Linear's (out_features, in_features), nn.Embedding's (vocab, d_model). Inside
these modules it is stored transposed, as `weight_t`, because decoding one token is a vector-matrix
product that streams every weight from memory once, and CPU BLAS streams an (in, out) matrix faster
than an (out, in) one (measured on 2 cores: 1.15-1.2x for SmolLM2's block matrices, 2x for its
49152 x 576 head). The state-dict hooks below convert, so the storage stays a private detail.

`make_linear` is the swap point: the loader builds every linear layer through it, so a quantized
or adapted layer can replace this one without touching the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quant import QuantizedLinear, QuantizedMatrix


class TransposedStorage(nn.Module):
    """A module whose `weight` (standard layout) is stored as the parameter `weight_t`, transposed.

    The state dict says `weight` in the standard layout (a transposed view when saving; loading
    copies into the storage layout), so files and readers never see `weight_t`. subtle: with
    keep_vars=True that entry is a view of the parameter, not the parameter itself; find
    parameters by identity through named_parameters() instead."""

    weight_t: nn.Parameter | None

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_t.t()  # a view: no copy, and writes through it reach the parameter

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        stored = destination.pop(prefix + "weight_t", None)
        if stored is not None:
            destination[prefix + "weight"] = stored.t()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if self.weight_t is not None and prefix + "weight" in state_dict:  # the dict is load_state_dict's own copy
            state_dict[prefix + "weight_t"] = state_dict.pop(prefix + "weight").t().contiguous()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        missing_keys[:] = [prefix + "weight" if k == prefix + "weight_t" else k for k in missing_keys]


class Linear(TransposedStorage):
    """y = x W^T + b, with W (out_features, in_features) as in nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def in_features(self) -> int:
        return self.weight_t.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight_t.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)  # the transposed view keeps BLAS on the fast layout

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def make_linear(weight: torch.Tensor | QuantizedMatrix, bias: torch.Tensor | None) -> nn.Module:
    """The one factory for loaded linear layers: weight (out, in) in the compute dtype, or a
    QuantizedMatrix (a file's blocks kept small), and bias (out,) or None."""
    if isinstance(weight, QuantizedMatrix):
        return QuantizedLinear(weight, bias)
    with torch.device("meta"):  # no memory for the random init we are about to replace
        layer = Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight_t = nn.Parameter(weight.t().contiguous())
    if bias is not None:
        layer.bias = nn.Parameter(bias)
    return layer


def resized_rows(weight: torch.Tensor, n: int) -> torch.Tensor:
    """(V, C) -> (n, C): keep the first rows; new rows start at the mean row, an "average" token."""
    new = weight.new_empty(n, weight.shape[1])
    keep = min(n, weight.shape[0])
    with torch.no_grad():
        new[:keep] = weight[:keep]
        new[keep:] = weight.mean(dim=0, keepdim=True)
    return new


class TokenEmbedding(TransposedStorage):
    """One vector per token: weight (vocab, d_model), stored (d_model, vocab)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(torch.empty(dim, vocab_size))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        columns = self.weight_t.index_select(1, ids.reshape(-1))  # (C, B*T)
        # subtle: contiguous() matters. Elementwise ops keep their input's memory layout, so a
        # transposed view here would make the whole residual stream column-major and every norm
        # and matmul downstream copy it first (measured: 8% of a training step).
        return columns.t().contiguous().view(*ids.shape, self.weight_t.shape[0])  # (B, T, C)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V): scores against every token's vector, a tied LM head's logits."""
        return F.linear(x, self.weight)

    def resize(self, n: int) -> None:
        self.weight_t = nn.Parameter(resized_rows(self.weight.detach(), n).t().contiguous(),
                                     requires_grad=self.weight_t.requires_grad)


class LMHead(TransposedStorage):
    """Hidden states (B, T, C) -> logits (B, T, V), with a matrix of its own or the token
    embedding's (tied, no matrix here), an optional bias, and an optional soft cap: logits become
    softcap * tanh(logits / softcap) (Gemma 2), so every reader of the head sees the same numbers."""

    def __init__(self, d_model: int, vocab_size: int, bias: bool = False,
                 tied_to: TokenEmbedding | None = None, softcap: float | None = None) -> None:
        super().__init__()
        self.softcap = softcap
        # subtle: a tied embedding is kept out of _modules, so its weight has one owner: it is saved,
        # counted, moved and trained once, under tok_emb.
        self.__dict__["tied_to"] = tied_to
        self.weight_t = nn.Parameter(torch.empty(d_model, vocab_size)) if tied_to is None else None
        self.bias = nn.Parameter(torch.zeros(vocab_size)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return self.tied_to.weight if self.tied_to is not None else self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tied_to is None:
            logits = F.linear(x, self.weight, self.bias)
        else:
            logits = self.tied_to.project(x)  # a quantized embedding multiplies without dequantizing
            logits = logits + self.bias if self.bias is not None else logits
        return logits if self.softcap is None else torch.tanh(logits / self.softcap) * self.softcap

    def resize(self, n: int) -> None:
        """Grow or shrink to n tokens (the tied embedding resizes itself)."""
        if self.weight_t is not None:
            self.weight_t = nn.Parameter(resized_rows(self.weight.detach(), n).t().contiguous(),
                                         requires_grad=self.weight_t.requires_grad)
        if self.bias is not None:
            self.bias = nn.Parameter(resized_rows(self.bias.detach()[:, None], n)[:, 0],
                                     requires_grad=self.bias.requires_grad)

    def extra_repr(self) -> str:
        return f"tied={self.tied_to is not None}, bias={self.bias is not None}"
