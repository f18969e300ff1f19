"""Code tiles: GGML block matrices laid out for llama.cpp-style integer dot products (code_tiles.c,
built on first use by native.py).

PyTorch's own int4 kernel spends ~100 us on one of SmolLM2's matrices at batch 1, far from what
memory allows (~10 us). The C file multiplies 16 rows at once with AVX-512 VNNI on activations
rounded to int8 per block of 32, as llama.cpp does. Where it cannot be built (no compiler, another
CPU, LUCIDLM_NATIVE=0), `library()` is None and quant.py keeps PyTorch's kernels.

This file holds the layout (`to_tiles`, `from_tiles`, `tile_rows`), the activation rounding in plain
PyTorch (the reference for tests), and the call. The layout is described in code_tiles.c.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from ..gguf_file import GGML_TYPES
from . import native

BLOCK = 32  # weights per GGML block
TILE = 16  # rows side by side: the lanes of one AVX-512 register


def block_bytes(bits: int) -> int:
    """Bytes of codes per tile and block: 16 rows x 32 weights."""
    return TILE * BLOCK * bits // 8


def scales_per_block(bits: int) -> int:
    """Float16 scales per row and block: d and m for 4-bit codes; d alone for 8-bit ones, whose m is
    -128 d (the codes are Q8_0's made unsigned), computed rather than held."""
    return 2 if bits == 4 else 1


def to_tiles(codes: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None, bits: int) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """codes (N, K) unsigned (0..15 or 0..255), d and m (N, K/32) with w = d codes + m (8-bit codes:
    m None, as it is -128 d) -> the tiled codes (N'/16, K/32, bytes) uint8 and scales
    (N'/16, K/32, 2 or 1, 16) float16, N' = N rounded up to 16 (padding rows are zero)."""
    if (bits == 8) != (m is None):
        raise ValueError("8-bit tiles take no min (it is -128 d); 4-bit tiles need one")
    n, k = codes.shape
    padded = -(-n // TILE) * TILE
    held = (d, m) if bits == 4 else (d,)
    codes, scales = codes.to(torch.uint8), torch.stack(held, dim=2).to(torch.float16)  # (N, K/32, 2 or 1)
    if padded != n:
        codes = torch.nn.functional.pad(codes, (0, 0, 0, padded - n))
        scales = torch.nn.functional.pad(scales, (0, 0, 0, 0, 0, padded - n))
    tiles, blocks = padded // TILE, k // BLOCK
    if bits == 8:  # column 4 i + b of row r -> byte 64 i + 4 r + b
        tiled = codes.view(tiles, TILE, blocks, 8, 4).permute(0, 2, 3, 1, 4)
    else:  # columns 4 i + b and 16 + 4 i + b share a byte, low and high nibble
        halves = codes.view(tiles, TILE, blocks, 2, 4, 4)
        tiled = (halves[:, :, :, 0] | (halves[:, :, :, 1] << 4)).permute(0, 2, 3, 1, 4)
    tiled = tiled.reshape(tiles, blocks, block_bytes(bits))
    return tiled, scales.view(tiles, TILE, blocks, len(held)).permute(0, 2, 3, 1).contiguous()


# The block formats code_tiles.c reads: name -> (GGML's type code, bytes per block of 32)
GGML_KINDS = {name: (code, size) for code, (name, _, size) in GGML_TYPES.items() if name in ("Q4_0", "Q4_1", "Q8_0")}


def tiles_from_blocks(raw: torch.Tensor, kind: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A file's blocks (N, K/32 * block bytes) uint8 -> what `to_tiles` makes of their decoded codes and
    scales (Q8_0's codes made unsigned), in one pass of the C kernel over the bytes."""
    n, (code, size) = raw.shape[0], GGML_KINDS[kind]
    if raw.dtype != torch.uint8 or raw.shape[1] != k // BLOCK * size:
        raise ValueError(f"{kind} blocks of {k} columns are (N, {k // BLOCK * size}) uint8, not {tuple(raw.shape)} "
                         f"{raw.dtype}")
    bits, tiles, blocks = 8 if kind == "Q8_0" else 4, -(-n // TILE), k // BLOCK
    tiled = torch.empty(tiles, blocks, block_bytes(bits), dtype=torch.uint8)
    scales = torch.empty(tiles, blocks, scales_per_block(bits), TILE, dtype=torch.float16)
    raw = raw.contiguous()
    if library().code_tiles_from_blocks(raw.data_ptr(), n, k, code, tiled.data_ptr(), scales.data_ptr(),
                                        torch.get_num_threads()):
        raise ValueError(f"code_tiles.c does not read {kind} blocks")
    return tiled, scales


def tile_rows(tiled: torch.Tensor, scales: torch.Tensor, ids: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Rows `ids` (0..n-1) of the (n, K) matrix as float32, reading only their bytes (an embedding
    lookup). One token on the CPU (a decoding step) takes the C kernel's one call instead of ten
    operators. An id outside 0..n-1 is an IndexError, as in nn.Embedding (C would read past the end)."""
    tiles, blocks = tiled.shape[:2]
    if ids.numel() == 1:  # a decoding step's token: one read, not two reductions
        low = high = int(ids.reshape(()))
    else:
        low, high = (int(ids.min()), int(ids.max())) if ids.numel() else (0, 0)
    if low < 0 or high >= n:
        raise IndexError(f"token id {low if low < 0 else high} is outside the embedding's {n} rows")
    if ids.numel() == 1 and tiled.device.type == "cpu" and library() is not None:
        out = torch.empty(1, blocks * BLOCK)
        library().code_tiles_row(tiled.data_ptr(), scales.data_ptr(), blocks * BLOCK, high, bits, out.data_ptr())
        return out
    lanes = tiled.view(tiles, blocks, -1, TILE, 4)  # (tiles, K/32, 8 or 4, 16 rows, 4)
    data = lanes[ids // TILE, :, :, ids % TILE]  # (n, K/32, 8 or 4, 4)
    picked = scales[ids // TILE, :, :, ids % TILE]  # (n, K/32, 2 or 1)
    return _weights(data, picked, bits)


def from_tiles(tiled: torch.Tensor, scales: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """The whole (n, K) matrix as float32 (a long input's dense product)."""
    tiles, blocks = tiled.shape[:2]
    data = tiled.view(tiles, blocks, -1, TILE, 4).permute(0, 3, 1, 2, 4)  # (tiles, 16 rows, K/32, 8 or 4, 4)
    rows = scales.permute(0, 3, 1, 2).reshape(tiles * TILE, blocks, scales_per_block(bits))
    return _weights(data.reshape(tiles * TILE, blocks, -1, 4), rows, bits)[:n]


def _weights(data: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Rows' code bytes (n, K/32, 8 or 4, 4) and scales (n, K/32, 2 or 1) -> w = d c + m, float32 (n, K)."""
    if bits == 4:  # low nibbles are columns 0..15 of a block, high ones 16..31
        data = torch.stack((data & 15, data >> 4), dim=2)  # (n, K/32, 2, 4, 4)
    n, blocks = data.shape[:2]
    w = data.reshape(n, blocks, BLOCK).float()
    d = scales[:, :, :1].float()
    m = scales[:, :, 1:].float() if bits == 4 else -128 * d
    w.mul_(d).add_(m)
    return w.view(n, blocks * BLOCK)


def rounded_activations(x: torch.Tensor) -> torch.Tensor:
    """What the C kernel multiplies by: x (M, K) float32 rounded to int8 per block of 32 with the
    block's largest magnitude at 127 (llama.cpp's Q8 activations), given back as float32."""
    blocks = x.float().view(x.shape[0], -1, BLOCK)
    d = blocks.abs().amax(dim=2, keepdim=True) / 127
    inverse = torch.where(d > 0, 1 / d, 0)  # times the reciprocal, as the C kernel does: x / d can round apart
    return (torch.round(blocks * inverse) * d).view(x.shape)


def matmul(x: torch.Tensor, tiled: torch.Tensor, scales: torch.Tensor, bits: int,
           into: torch.Tensor | None = None) -> torch.Tensor:
    """x (M, K) float32 contiguous -> (M, N') float32 through the C kernel; with `into` (M, N')
    float32 contiguous, adds the product to it in place (a residual add) and returns it."""
    rows, k = x.shape
    out = torch.empty(rows, tiled.shape[0] * TILE) if into is None else into
    failed = library().code_tiles_matmul(x.data_ptr(), rows, k, tiled.data_ptr(), scales.data_ptr(), tiled.shape[0],
                                         bits, out.data_ptr(), into is not None, torch.get_num_threads())
    if failed:
        raise MemoryError("code tiles: out of memory for the rounded activations")
    return out


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot run here (`why_not()` says why)."""
    lib, _ = native.load("code_tiles")
    if lib is not None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        native.declare(lib, "code_tiles_matmul", ptr, i64, i64, ptr, ptr, i64, ctypes.c_int, ptr, ctypes.c_int,
                       ctypes.c_int)
        native.declare(lib, "code_tiles_row", ptr, ptr, i64, i64, ctypes.c_int, ptr)
        native.declare(lib, "code_tiles_from_blocks", ptr, i64, i64, ctypes.c_int, ptr, ptr, ctypes.c_int)
    return lib


def why_not() -> str | None:
    return native.load("code_tiles")[1]
