"""Quantized matrices held in memory: GGML's block formats kept small, multiplied by PyTorch's own
weight-only kernels, with a readable dequantize-then-matmul path beside them.

Three in-memory forms (gpt-fast's `quantize.py` swaps in the same kinds of layer):
- Int4Groups: 4-bit codes with a scale and a zero per group of 32 weights, the form of GGML's
  Q4_0 and Q4_1 (w = d * q + m), run by `aten._weight_int4pack_mm_for_cpu`;
- Int8Groups: GGML's Q8_0 (int8 codes, a scale per 32). No CPU kernel takes int8 with a scale per
  group, so each code q = 16 h + l is split into two 4-bit halves and the matrix into two
  Int4Groups: the same bytes, two int4 calls, and the file's codes exactly;
- Int8Rows: int8 codes with one scale per output row, run by `aten._weight_int8pack_mm`: the form
  that types without a kernel of their own (Q5, Q6_K) are re-quantized to.
Both kernels want bfloat16 activations; the layers cast in and out, so the model around them keeps
its dtype.

Where lucidlm's own C kernel builds (code_tiles.py: x86-64 with AVX-512 VNNI and a C compiler), the
file's Q4_0, Q4_1 and Q8_0 blocks go instead into CodeTiles, which multiply as llama.cpp does: the
file's exact scales, activations rounded to int8 per 32, integer dot products. 2.5-3x faster than
PyTorch's int4 kernel at batch 1 on SmolLM2's matrices, and 1.7x faster than dense float32 BLAS on a
512-token prompt. With PyTorch's kernels a large batch (a long prompt) dequantizes the matrix and
uses dense BLAS, which those kernels cannot beat there. An input that needs gradients takes the
plain path. Block layouts: ggml/src/ggml-common.h (block_q8_0, block_q4_0, block_q4_1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LucidError
from ..gguf_file import GGML_TYPES
from . import code_tiles

GROUP = 32  # weights per GGML block, and per int4 group
# Rows of activations up to which the weight-only kernels beat dequantize + dense BLAS (measured on
# 2 cores for SmolLM2's matrices: the kernel wins at 8 rows, loses 2x at 64).
KERNEL_MAX_ROWS = 16
INT4_ROWS_PER_PACK = 64  # the CPU int4 kernel packs 64 output rows at a time (see _unpack_int4)
KERNEL_DTYPE = torch.bfloat16

# GGML block types read straight into an in-memory form, and the form others are converted to.
NATIVE = {"Q4_0": "int4", "Q4_1": "int4", "Q8_0": "int8 groups"}
CONVERTED = {"Q4_K": "int4", "Q3_K": "int4", "Q2_K": "int4", "Q5_0": "int8", "Q5_1": "int8", "Q5_K": "int8",
             "Q6_K": "int8"}
TILED = {"Q4_0": "int4 tiles", "Q4_1": "int4 tiles", "Q8_0": "int8 tiles"}  # where CodeTiles can run
BLOCK_BYTES = {name: size for name, _, size in GGML_TYPES.values() if name in NATIVE}  # per block of 32


def tiles_available() -> bool:
    """Whether lucidlm's C kernel runs on this machine (built on first use)."""
    return code_tiles.library() is not None


def form_of(kind: str) -> str:
    """The in-memory form a GGML type's matrix is held in on this machine."""
    if kind in TILED and tiles_available():
        return TILED[kind]
    return NATIVE.get(kind) or CONVERTED[kind]


def has_kernel(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


# Asked once: this torch build's CPU kernels (old builds lack them; the plain path then serves)
INT4_KERNEL = has_kernel("_weight_int4pack_mm_for_cpu")
INT8_KERNEL = has_kernel("_weight_int8pack_mm")


def block_scales(raw: torch.Tensor, kind: str) -> torch.Tensor:
    """GGML blocks (N, K/32 * block bytes) uint8 -> the float16 scales at the head of each block where
    they lie, no copy: (N, K/32, 1 or 2), d and Q4_1's m (a block is an even number of bytes)."""
    halves = raw.contiguous().view(torch.int16).view(raw.shape[0], -1, BLOCK_BYTES[kind] // 2)
    return halves[:, :, :2 if kind == "Q4_1" else 1].view(torch.float16)


def _nibbles(raw: torch.Tensor, start: int) -> torch.Tensor:
    """(N, B, bytes) -> the 32 4-bit codes of each block (N, B, 32): GGML puts element j in the low
    nibble of byte j and element j + 16 in the high nibble of byte j."""
    packed = raw[:, :, start:start + GROUP // 2]
    return torch.cat((packed & 15, packed >> 4), dim=2)


def decode_blocks(raw: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """GGML blocks (N, K/32 * block bytes) uint8 -> (codes (N, K/32, 32), scale d (N, K/32), min m or
    None), with w = d * codes + m. Q4_0's codes are shifted by -8 into the min: m = -8d."""
    blocks = raw.view(raw.shape[0], -1, BLOCK_BYTES[kind])  # (N, B, bytes)
    scales = block_scales(raw, kind).float()
    d = scales[:, :, 0]
    if kind == "Q8_0":
        return blocks[:, :, 2:].contiguous().view(torch.int8), d, None
    if kind == "Q4_0":
        return _nibbles(blocks, 2), d, -8 * d
    return _nibbles(blocks, 4), d, scales[:, :, 1]  # Q4_1


def dequantize_blocks(raw: torch.Tensor, kind: str, shape: tuple[int, int]) -> torch.Tensor:
    """The plain reference: the file's blocks as float32 (N, K), as GGML defines them."""
    codes, d, m = decode_blocks(raw, kind)
    w = codes.float() * d[:, :, None]
    if m is not None:
        w = w + m[:, :, None]
    return w.reshape(shape)


class QuantizedMatrix(nn.Module):
    """A (N, K) matrix in a compact form. `dequantize()` gives it in the standard layout, `rows(ids)`
    some of its rows (an embedding lookup), `matmul(x)` is x W^T through the kernel when it pays,
    else through the dequantized matrix (the plain path)."""

    form = ""

    def __init__(self, shape: tuple[int, int], source_type: str) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.source_type = source_type  # the file's type, shown by repr

    kernel_available = False

    def uses_kernel(self, x: torch.Tensor) -> bool:
        return self.kernel_available and x.shape[0] <= KERNEL_MAX_ROWS and x.device.type == "cpu"

    kernel_dtype = KERNEL_DTYPE  # the activations' dtype the kernel takes

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """(..., K) -> (..., N), in x's dtype."""
        flat = x.reshape(-1, self.shape[1])  # (M, K)
        if self.uses_kernel(flat):
            out = self.kernel(flat.to(self.kernel_dtype)).to(x.dtype)
        else:  # the plain path, in x's dtype: a long input's fast path too (dense BLAS beats the kernel)
            out = F.linear(flat, self.dequantize().to(x.dtype))
        return out.view(*x.shape[:-1], self.shape[0])

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        pass  # the layer holding it saves the dequantized `weight`: readers see the standard layout

    def _load_from_state_dict(self, *args) -> None:
        pass  # the holding layer refuses new weights

    def extra_repr(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}, {self.form} (from {self.source_type})"


class Int4Groups(QuantizedMatrix):
    """4-bit codes q in 0..15 with, per group of 32 weights of a row, a scale s and a zero z:
    w = (q - 8) s + z, the int4 kernel's convention. Stored as the kernel packs them."""

    form = "int4, a scale and zero per 32"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, source_type: str) -> None:
        """codes (N, K) integers 0..15, scale and zero (N, K/32), with w = (codes - 8) * scale + zero."""
        n, k = codes.shape
        super().__init__((n, k), source_type)
        padded = -(-n // INT4_ROWS_PER_PACK) * INT4_ROWS_PER_PACK  # the kernel packs whole 64-row groups
        if padded != n:
            codes = F.pad(codes, (0, 0, 0, padded - n), value=8)
            scale, zero = F.pad(scale, (0, 0, 0, padded - n)), F.pad(zero, (0, 0, 0, padded - n))
        self.register_buffer("packed", pack_int4(codes))  # (N', K/2) uint8
        # (K/32, N', 2): the kernel's layout of scales and zeros, in its activation dtype
        self.register_buffer("scale_zero", torch.stack((scale, zero), dim=2).transpose(0, 1)
                             .contiguous().to(KERNEL_DTYPE))

    kernel_available = INT4_KERNEL

    @staticmethod
    def cat_rows(parts: list["Int4Groups"]) -> "Int4Groups":
        """One matrix of the parts' rows; every part but the last holds whole 64-row packs."""
        whole = parts[0]
        whole.packed = torch.cat([p.packed for p in parts])
        whole.scale_zero = torch.cat([p.scale_zero for p in parts], dim=1)
        whole.shape = (sum(p.shape[0] for p in parts), whole.shape[1])
        return whole

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, GROUP, self.scale_zero.to(KERNEL_DTYPE))
        return out[:, :self.shape[0]]

    def _weights(self, codes: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """codes (n, K) and their rows' groups (K/32, n, 2) -> (q - 8) s + z, float32 (n, K)."""
        groups = groups.float()
        scale, zero = groups[..., 0].t(), groups[..., 1].t()  # (n, K/32)
        w = codes.float().view(len(codes), -1, GROUP)  # (n, K/32, 32); in place from here: one buffer
        w.sub_(8).mul_(scale[:, :, None]).add_(zero[:, :, None])
        return w.view(len(codes), self.shape[1])

    def dequantize(self) -> torch.Tensor:
        return self._weights(unpack_int4(self.packed), self.scale_zero)[:self.shape[0]]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Only the asked rows' bytes are read: row j of a pack is a nibble of column j % 32 (see
        unpack_int4), the low one for j < 32."""
        k = self.shape[1]
        packs = self.packed.view(-1, k, INT4_ROWS_PER_PACK // 2)  # (N/64, K, 32)
        within = ids % INT4_ROWS_PER_PACK
        data = packs[ids // INT4_ROWS_PER_PACK, :, within % (INT4_ROWS_PER_PACK // 2)]  # (n, K)
        codes = torch.where((within >= INT4_ROWS_PER_PACK // 2)[:, None], data >> 4, data & 15)
        return self._weights(codes, self.scale_zero[:, ids])


PACK_ROWS = 4096  # rows decoded from a file's blocks at a time (a multiple of the 64-row pack)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """(N, K) codes 0..15 (N a multiple of 64) -> the CPU int4 kernel's packed (N, K/2) uint8, in
    one byte per code throughout: the kernel's own converter wants int32 codes, 4x the memory and
    0.2 s of SmolLM2's load (tests/test_quant.py checks that both give the same bytes)."""
    n, k = codes.shape
    groups = codes.to(torch.uint8).view(n // INT4_ROWS_PER_PACK, 2, INT4_ROWS_PER_PACK // 2, k)  # (N/64, 2, 32, K)
    packed = (groups[:, 0] | (groups[:, 1] << 4)).transpose(1, 2)  # (N/64, K, 32)
    # subtle: for a single pack, reshape would return a transposed view, which the kernel refuses
    return packed.contiguous().view(n, k // 2)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of pack_int4: (N, K/2) uint8 -> (N, K) uint8 codes. subtle: the kernel packs 64 rows
    together: byte (k, j) of a pack holds row j in its low nibble and row j + 32 in its high one."""
    n, half = packed.shape
    k = half * 2
    groups = packed.view(n // INT4_ROWS_PER_PACK, k, INT4_ROWS_PER_PACK // 2)  # (N/64, K, 32)
    codes = torch.cat((groups & 15, groups >> 4), dim=2)  # (N/64, K, 64): rows j and j + 32
    return codes.transpose(1, 2).reshape(n, k)


class Int8Rows(QuantizedMatrix):
    """int8 codes with one scale per output row: w = q s."""

    form = "int8, a scale per row"

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, source_type: str) -> None:
        super().__init__(tuple(codes.shape), source_type)
        self.register_buffer("codes", codes.to(torch.int8).contiguous())  # (N, K)
        self.register_buffer("scale", scale.to(KERNEL_DTYPE).contiguous())  # (N,)

    kernel_available = INT8_KERNEL

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x, self.codes, self.scale.to(KERNEL_DTYPE))

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scale.float()[:, None]

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.codes[ids].float() * self.scale.float()[ids, None]


class Int8Groups(QuantizedMatrix):
    """int8 codes q with a scale d per group of 32: w = d q = 16 d h + d l, with h = q >> 4 in -8..7
    and l = q & 15 in 0..15, held as two Int4Groups (high: codes h + 8, scale 16d, zero 0; low:
    codes l, scale d, zero 8d)."""

    form = "int8 as two int4 halves, a scale per 32"

    def __init__(self, codes: torch.Tensor, d: torch.Tensor, source_type: str) -> None:
        """codes (N, K) int8, d (N, K/32)."""
        super().__init__(tuple(codes.shape), source_type)
        codes = codes.to(torch.int8)  # shifts and masks stay in one byte: two's complement does the rest
        self.high = Int4Groups((codes >> 4) + 8, 16 * d, torch.zeros_like(d), source_type)
        self.low = Int4Groups(codes & 15, d, 8 * d, source_type)

    kernel_available = INT4_KERNEL

    @staticmethod
    def cat_rows(parts: list["Int8Groups"]) -> "Int8Groups":
        whole = parts[0]
        whole.high = Int4Groups.cat_rows([p.high for p in parts])
        whole.low = Int4Groups.cat_rows([p.low for p in parts])
        whole.shape = whole.high.shape
        return whole

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        return self.high.kernel(x).float() + self.low.kernel(x).float()  # summed outside bfloat16

    def dequantize(self) -> torch.Tensor:
        return self.high.dequantize() + self.low.dequantize()

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.high.rows(ids) + self.low.rows(ids)


class CodeTiles(QuantizedMatrix):
    """A GGML block matrix (w = d c + m per 32 weights) in code_tiles.c's layout: 16 rows side by side,
    the file's float16 scales kept exactly. The kernel rounds the activations to int8 per 32."""

    kernel_dtype = torch.float32

    @property
    def kernel_available(self) -> bool:
        return tiles_available()

    def uses_kernel(self, x: torch.Tensor) -> bool:
        """Any number of rows: a prompt's too. code_tiles.c takes 4 rows per pass over a tile's codes,
        which makes a 512-token prompt 1.7x faster than dequantizing for dense BLAS (measured:
        Q8_0 1000 against 570 tokens/s, Q4_1 950 against 490, SmolLM2 on 2 threads). Not an input
        that needs gradients (LoRA on a quantized base): the C call has none, the plain path does."""
        return self.kernel_available and x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())

    def __init__(self, tiled: torch.Tensor, scales: torch.Tensor, shape: tuple[int, int], bits: int,
                 source_type: str) -> None:
        """tiled and scales in code_tiles' layout, of a (N, K) matrix (`CodeTiles.of` makes them)."""
        super().__init__(shape, source_type)
        self.bits = bits
        self.form = f"int{bits} in 16-row tiles, a scale{' and min' if bits == 4 else ''} per 32"
        self.register_buffer("tiled", tiled)  # (N'/16, K/32, 256 or 512) uint8
        # (N'/16, K/32, 2 or 1, 16) float16, held as its bits: model.to(dtype) converts floating buffers only
        self.register_buffer("scale_bits", scales.view(torch.int16))

    @staticmethod
    def of(codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None, bits: int, source_type: str) -> "CodeTiles":
        """codes (N, K) unsigned, d and m (N, K/32): w = d codes + m (8-bit codes: m None, -128 d)."""
        return CodeTiles(*code_tiles.to_tiles(codes, d, m, bits), tuple(codes.shape), bits, source_type)

    @staticmethod
    def cat_rows(parts: list["CodeTiles"]) -> "CodeTiles":
        """One matrix of the parts' rows; every part but the last holds whole 16-row tiles."""
        whole = parts[0]
        whole.tiled = torch.cat([p.tiled for p in parts])
        whole.scale_bits = torch.cat([p.scale_bits for p in parts])
        whole.shape = (sum(p.shape[0] for p in parts), whole.shape[1])
        return whole

    @property
    def scales(self) -> torch.Tensor:
        return self.scale_bits.view(torch.float16)

    def kernel(self, x: torch.Tensor) -> torch.Tensor:
        out = code_tiles.matmul(x.contiguous(), self.tiled, self.scales, self.bits)
        return out if out.shape[1] == self.shape[0] else out[:, :self.shape[0]]

    def dequantize(self) -> torch.Tensor:
        return code_tiles.from_tiles(self.tiled, self.scales, self.bits, self.shape[0])

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return code_tiles.tile_rows(self.tiled, self.scales, ids, self.bits, self.shape[0])


def int8_rows(w: torch.Tensor, source_type: str) -> Int8Rows:
    """Symmetric int8 per row of a float (N, K) matrix."""
    scale = w.abs().amax(dim=1).clamp(min=1e-30) / 127
    scale = scale.to(KERNEL_DTYPE).float()  # quantize against the scale the kernel will use
    return Int8Rows(torch.round(w / scale[:, None]).clamp(-128, 127), scale, source_type)


def int4_groups(w: torch.Tensor, source_type: str) -> Int4Groups:
    """Asymmetric 4-bit per group of 32 (Q4_1's rule: the group's min to max in 15 steps)."""
    n, k = w.shape
    groups = w.view(n, k // GROUP, GROUP)
    low, high = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((high - low) / 15).to(KERNEL_DTYPE).float()
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((groups - low[:, :, None]) / safe[:, :, None]).clamp(0, 15)
    return Int4Groups(codes.view(n, k), scale, low + 8 * scale, source_type)


def from_blocks(raw: torch.Tensor, kind: str, shape: tuple[int, int], tiles: bool | None = None) -> QuantizedMatrix:
    """A file's GGML blocks (N, row bytes) uint8 -> the in-memory form, with the file's codes. CodeTiles
    (`tiles`; by default where their kernel runs) keep its scales; PyTorch's kernels' forms re-express
    them with the kernel's zero, rounded to bfloat16 as those kernels take them. Where the C kernels
    run, the bytes go straight into tiles; else they are decoded PACK_ROWS rows at a time, so the
    decoded codes of a whole embedding never exist at once."""
    if kind not in NATIVE:
        raise ValueError(f"no in-memory form reads {kind} blocks directly")
    tiles = tiles_available() if tiles is None else tiles
    if tiles and kind == "Q4_0" and _q4_0_min_overflows(raw):
        tiles = False  # PyTorch's int4 form holds it (in bfloat16, whose range is float32's)
    if tiles and tiles_available() and raw.device.type == "cpu":  # the bytes straight into tiles, in C
        return CodeTiles(*code_tiles.tiles_from_blocks(raw, kind, shape[1]), tuple(shape), 8 if kind == "Q8_0" else 4,
                         kind)
    parts = [_from_block_rows(raw[i:i + PACK_ROWS], kind, shape[1], tiles) for i in range(0, shape[0], PACK_ROWS)]
    return parts[0] if len(parts) == 1 else type(parts[0]).cat_rows(parts)


def _q4_0_min_overflows(raw: torch.Tensor) -> bool:
    """Whether a Q4_0 block's scale d is so large that the min its tile holds, -8 d in float16,
    would be infinite (|d| > 65504 / 8: no real model's, but a file may say so)."""
    return bool((block_scales(raw, "Q4_0").float().abs() > 65504 / 8).any())


def _from_block_rows(raw: torch.Tensor, kind: str, width: int, tiles: bool) -> QuantizedMatrix:
    codes, d, m = decode_blocks(raw, kind)
    codes = codes.reshape(len(raw), width)
    if tiles and kind == "Q8_0":  # unsigned codes for vpdpbusd: d q = d (q + 128) - 128 d
        # q + 128 as a byte is q's two's complement byte with its top bit flipped: one pass, no widening
        return CodeTiles.of(codes.view(torch.uint8) ^ 128, d, None, 8, kind)
    if tiles:
        return CodeTiles.of(codes, d, m, 4, kind)
    if kind == "Q8_0":
        return Int8Groups(codes, d, kind)
    return Int4Groups(codes, d, m + 8 * d, kind)  # (q - 8) d + (m + 8d) = q d + m


def form_bytes(form: str, shape: tuple[int, int]) -> int:
    """Bytes a (N, K) matrix takes in memory in a form (what `lucidlm info` reports)."""
    n, k = shape
    padded = -(-n // INT4_ROWS_PER_PACK) * INT4_ROWS_PER_PACK
    int4 = padded * k // 2 + padded * (k // GROUP) * 2 * 2  # codes, a bf16 scale and zero per group
    tiled = -(-n // code_tiles.TILE) * code_tiles.TILE
    scales = tiled * (k // GROUP) * 2  # a float16 scale per block (int4 tiles: and a min)
    return {"int4": int4, "int8 groups": 2 * int4, "int8": n * k + n * 2,  # int8: a bf16 scale per row
            "int4 tiles": tiled * k // 2 + 2 * scales, "int8 tiles": tiled * k + scales}[form]


def quantize_matrix(w: torch.Tensor, form: str, source_type: str) -> QuantizedMatrix:
    return (int4_groups if form == "int4" else int8_rows)(w.float(), source_type)


class HoldsQuantized(nn.Module):
    """A layer built around a QuantizedMatrix (`self.matrix`): its state dict says `weight`, dequantized,
    and loading new weights into it is refused (they would need quantizing)."""

    matrix: QuantizedMatrix

    @property
    def weight(self) -> torch.Tensor:
        return self.matrix.dequantize()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # a bias, if any
        destination[prefix + "weight"] = self.matrix.dequantize()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "weight" in state_dict:
            error_msgs.append(f"{prefix}weight is held quantized: load the model with dtype float32 to change it")
        else:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                          unexpected_keys, error_msgs)


class QuantizedLinear(HoldsQuantized):
    """y = x W^T + b with W held by a QuantizedMatrix: the drop-in for Linear that the loader's
    factory builds from a file's blocks."""

    def __init__(self, matrix: QuantizedMatrix, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.matrix = matrix
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None

    @property
    def in_features(self) -> int:
        return self.matrix.shape[1]

    @property
    def out_features(self) -> int:
        return self.matrix.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.matrix.matmul(x)
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    def resize(self, n: int) -> None:
        raise LucidError("a quantized head cannot be resized: load the model with dtype float32")


class QuantizedEmbedding(HoldsQuantized):
    """The token embedding held quantized: a lookup dequantizes only the rows it reads, and a tied LM
    head multiplies by the same matrix through `project`."""

    def __init__(self, matrix: QuantizedMatrix, dtype: torch.dtype) -> None:
        super().__init__()
        self.matrix = matrix
        # the dtype of the vectors it hands the model; a buffer, so it follows model.to(...)
        self.register_buffer("anchor", torch.empty(0, dtype=dtype), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.matrix.rows(ids.reshape(-1)).to(self.anchor.dtype)  # (B*T, C)
        return rows.view(*ids.shape, self.matrix.shape[1])  # (B, T, C)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V): the tied head's logits."""
        return self.matrix.matmul(x)

    def resize(self, n: int) -> None:
        raise LucidError("a quantized embedding cannot be resized: load the model with dtype float32")
