"""A quantized matrix on its way from a file into the model, kept in the file's blocks.

GGML quantizes along a row (in blocks of 32 input weights), so everything the loader does to a
matrix's rows (llama.cpp's query/key order undone, q|k|v fused) can move the bytes instead of
dequantizing them. At the end `matrix()` builds the in-memory form (lucidlm/model/quant.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import FormatError
from ..model.quant import CONVERTED, NATIVE, QuantizedMatrix, block_scales, dequantize_blocks, form_of, \
    from_blocks, quantize_matrix

QUANTIZABLE = tuple(NATIVE) + tuple(CONVERTED)


@dataclass(frozen=True)
class RowBlocks:
    """data: (N, row bytes) uint8 blocks of a type kept as it is (Q8_0, Q4_0, Q4_1), or (N, K)
    float32 for a type that will be re-quantized (the K-quants, Q5); kind: the file's type name."""

    data: torch.Tensor
    kind: str
    shape: tuple[int, int]
    form: str  # the in-memory form it becomes: "int4", "int8 groups" or "int8"

    @staticmethod
    def of(data: torch.Tensor, kind: str, shape: tuple[int, int]) -> "RowBlocks":
        return RowBlocks(data, kind, tuple(shape), form_of(kind))

    @property
    def native(self) -> bool:
        return self.data.dtype == torch.uint8

    def map_rows(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "RowBlocks":
        """Apply a transform that only reorders or drops whole rows."""
        data = fn(self.data)
        return RowBlocks(data, self.kind, (data.shape[0], self.shape[1]), self.form)

    def dequantize(self) -> torch.Tensor:
        return dequantize_blocks(self.data, self.kind, self.shape) if self.native else self.data

    def check_finite(self, name: str, origin: str) -> None:
        """A flipped scale in a block is NaN or infinite; only the scales can be (codes are integers)."""
        if self.native:  # a float16 whose exponent bits are all ones is infinite or NaN (isfinite: 1.7x slower)
            bits = block_scales(self.data, self.kind).view(torch.int16)
            finite = not bool(((bits & 0x7C00) == 0x7C00).any())
        else:
            finite = bool(torch.isfinite(self.data.sum()))
        if not finite:
            raise FormatError(f"{origin}: tensor {name} holds NaN or infinite values (a corrupt file?)")

    @staticmethod
    def cat(parts: list["RowBlocks"]) -> "RowBlocks":
        """Stack the parts' rows (a fused q|k|v). Mixed types (K-quant files mix them) meet as float
        and take the finer form."""
        k = parts[0].shape[1]
        if any(p.shape[1] != k for p in parts):
            raise ValueError("the parts have different widths")
        kinds = {p.kind for p in parts}
        if len(kinds) == 1 and all(p.native for p in parts):
            data = torch.cat([p.data for p in parts])
            return RowBlocks(data, parts[0].kind, (data.shape[0], k), parts[0].form)
        form = "int8" if any(p.form.startswith("int8") for p in parts) else "int4"
        data = torch.cat([p.dequantize() for p in parts])
        return RowBlocks(data, "+".join(sorted(kinds)), (data.shape[0], k), form)

    def matrix(self) -> QuantizedMatrix:
        if self.native:
            return from_blocks(self.data, self.kind, self.shape)
        return quantize_matrix(self.data, self.form, self.kind)
