"""One new token of one sequence through a Llama-style decoder held in code tiles: the fast path of
decoding, beside the modules' own forward (the plain path, which computes the same function).

At one token the arithmetic is small, and PyTorch's ~30 operator calls per block (norms, rotary,
cache writes, attention, splits) cost more than the block's matrix products. decode_step.c runs
every block in one call, in one OpenMP parallel region; this file hands it a table of each block's
weights and cache buffers.

`Transformer.hidden` takes this path (`try_step`) when `refusal(...)` is None: a causal decoder with pre-norm
RMSNorm, rotary positions, a gated SiLU MLP, no biases, no sliding window, soft-capping or QK-norm;
every block matrix a CodeTiles; no probe or hook; no gradient; one row, one token, a float32 CPU
KVCache without padding. Anything else takes the plain path.
"""

from __future__ import annotations

import ctypes
import functools
import weakref

import torch

from . import code_tiles, native
from .kv_cache import KVCache
from .norm import RMSNorm
from .probe import is_watched
from .quant import CodeTiles, QuantizedLinear


@functools.cache
def library() -> ctypes.CDLL | None:
    lib, _ = native.load("decode_step")
    if lib is not None:
        i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
        native.declare(lib, "decode_layers", ptr, i64, ptr, ptr, ptr, ptr, ptr, f32, f32, ptr, ptr, ctypes.c_int)
    return lib


def _tiled(linear) -> bool:
    """A bias-free linear layer whose matrix is code tiles without padding rows (the residual adds
    write whole rows in place)."""
    return (type(linear) is QuantizedLinear and linear.bias is None and isinstance(linear.matrix, CodeTiles)
            and linear.matrix.tiled.shape[0] * code_tiles.TILE == linear.matrix.shape[0])


def model_refusal(model) -> str | None:
    """Why this model's blocks cannot take the fast step, or None."""
    config = model.config
    if library() is None or code_tiles.library() is None:
        return "lucidlm's C kernels are not built here"
    if not config.causal or model.encoder is not None or model.rope is None or model.rel_bias is not None:
        return "not a causal decoder with rotary positions"
    if (config.norm != "rmsnorm" or config.norm_placement != "pre" or config.sandwich_norm or config.qk_norm
            or not config.gated_mlp or config.activation != "silu" or config.attn_logit_softcap is not None):
        return "not Llama-style blocks (pre-norm RMSNorm, gated SiLU MLP)"
    if not isinstance(model.final_norm, RMSNorm):
        return "no final RMSNorm"
    if model.blocks[0].attn.head_dim % 16:
        return "a head dimension that is not a multiple of 16 (decode_step.c's vectors)"
    for block in model.blocks:
        if block.attn.window is not None or block.cross_attn is not None:
            return "a sliding window or cross-attention"
        if not all(_tiled(linear) for linear in (block.attn.qkv, block.attn.out, block.mlp.up, block.mlp.down)):
            return "a block matrix is not held in code tiles"
    return None


class Plan:
    """What decode_layers reads of a model, found once (walking the modules costs ~1 ms, a sixth of a
    step) and checked at every step in a few microseconds: the same block, norm and linear modules
    in the same places, nothing watching them, every tensor still float32 or code tiles."""

    def __init__(self, model) -> None:
        self.refusal = model_refusal(model)
        self.parts = [] if self.refusal else [
            (block, block.attn, block.mlp, block.attn_norm, block.mlp_norm,
             *(linear for linear in (block.attn.qkv, block.attn.out, block.mlp.up, block.mlp.down)))
            for block in model.blocks]
        self.final_norm = model.final_norm
        self.table: torch.Tensor | None = None  # the weights' table, built on first use
        self.held: list = []  # (owner dict, key, what it held, its address): what the table was built from

    def describes(self, model) -> bool:
        blocks = model._modules["blocks"]._modules  # direct dict reads: nn.Module's __getattr__ is slow here
        if len(blocks) != len(self.parts) or model._modules["final_norm"] is not self.final_norm:
            return False
        for (block, attn, mlp, attn_norm, mlp_norm, qkv, out, up, down), now in zip(self.parts, blocks.values()):
            modules, attn_modules, mlp_modules = block._modules, attn._modules, mlp._modules
            if (now is not block or modules["attn"] is not attn or modules["mlp"] is not mlp
                    or modules["attn_norm"] is not attn_norm or modules["mlp_norm"] is not mlp_norm
                    or attn_modules["qkv"] is not qkv or attn_modules["out"] is not out
                    or mlp_modules["up"] is not up or mlp_modules["down"] is not down):
                return False
        return True

    def watched(self) -> bool:
        """A probe's recorders or a hook on a block: they expect the modules' own forward."""
        return any(is_watched(block) for block, *_ in self.parts)

    def weights(self) -> torch.Tensor | None:
        """decode_step.c's table of weights (n_layers, LAYER_FIELDS), or None if a tensor is no longer
        a float32 (norms) or code tile (matrices) buffer on the CPU. Built once (~0.3 ms); while every
        tensor it was built from is still in its place at the same address, it is reused."""
        if self.table is not None and all(owner[key] is value and (not address or value.data_ptr() == address)
                                          for owner, key, value, address in self.held):
            return self.table
        self.table, self.held, rows = None, [], []
        for block, attn, mlp, attn_norm, mlp_norm, *linears in self.parts:
            norms = [self._hold(norm._parameters, "weight") for norm in (attn_norm, mlp_norm)]
            if any(norm.dtype != torch.float32 or norm.device.type != "cpu" for norm in norms):
                return None
            row = [norms[0].data_ptr()]
            for linear in linears:
                matrix = self._hold(linear._modules, "matrix")
                tiled, scales = self._hold(matrix._buffers, "tiled"), self._hold(matrix._buffers, "scale_bits")
                if tiled.device.type != "cpu":
                    return None
                row += [tiled.data_ptr(), scales.data_ptr(), matrix.bits]
            rows.append(row[:7] + [norms[1].data_ptr()] + row[7:])  # decode_step.c's LAYER_FIELDS order
        self.table = torch.tensor(rows)
        return self.table

    def _hold(self, owner: dict, key: str):
        """owner[key], remembered with its address (0 for a module) so `weights` can tell it moved."""
        value = owner[key]
        self.held.append((owner, key, value, value.data_ptr() if isinstance(value, torch.Tensor) else 0))
        return value


PLANS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its Plan


def plan_for(model) -> Plan:
    plan = PLANS.get(model)
    if plan is None or not plan.describes(model):
        plan = PLANS[model] = Plan(model)
    return plan


def refusal(model, input_ids: torch.Tensor, cache: KVCache | None) -> str | None:
    """Why this forward cannot take the fast step, or None."""
    return _checked(model, input_ids, cache)[1]


def _checked(model, input_ids: torch.Tensor, cache: KVCache | None) -> tuple[Plan | None, str | None]:
    """(the model's plan, None) where this forward can take the fast step, else (None, why not)."""
    if cache is None or input_ids.shape != (1, 1):
        return None, "not one token of one row with a cache"
    if type(cache) is not KVCache or cache.has_padding or cache.encoder_output is not None:
        return None, "not a plain KV cache"
    if cache.dtype != torch.float32 or cache.device.type != "cpu" or not cache.keys[0].is_contiguous():
        return None, "not a float32 CPU cache"
    if model.training or torch.is_grad_enabled():
        return None, "training: gradients need the modules' own forward"
    plan = plan_for(model)
    if plan.refusal:
        return None, plan.refusal
    if plan.watched():
        return None, "a probe or hook watches the blocks"
    if model.final_norm.weight.dtype != torch.float32:
        return None, "not a float32 model"
    return plan, None


def try_step(model, input_ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor | None:
    """The final hidden state (1, 1, C) of one new token, its keys and values written to the cache,
    as Transformer.hidden gives it; or None, with nothing done, where `refusal` says no."""
    plan, _ = _checked(model, input_ids, cache)
    weights = plan.weights() if plan is not None else None
    if weights is None:
        return None
    config, attn = model.config, model.blocks[0].attn
    positions = cache.next_position[:, None]  # (1, 1)
    x = model.embed(input_ids, positions).reshape(config.d_model).float().contiguous()  # the residual stream
    cache.begin(positions, None)  # may grow the cache: its buffers are read after this
    caches = torch.tensor([[keys.data_ptr(), values.data_ptr()] for keys, values in zip(cache.keys, cache.values)])
    cos, sin = (t.contiguous() for t in model.rope.angles(positions, torch.float32))  # (1, 1, 1, R)
    dims = torch.tensor([attn.n_heads, attn.n_kv_heads, attn.head_dim, config.d_model, config.d_ff, cos.shape[-1],
                         cache.length, cache.capacity])  # decode_step.c's N_DIMS, in its order
    out = torch.empty(config.d_model)
    failed = library().decode_layers(x.data_ptr(), len(model.blocks), weights.data_ptr(), caches.data_ptr(),
                                     dims.data_ptr(), cos.data_ptr(), sin.data_ptr(), model.final_norm.eps, attn.scale,
                                     model.final_norm.weight.data_ptr(), out.data_ptr(), torch.get_num_threads())
    if failed:
        raise MemoryError("decode step: out of memory for its scratch space")
    cache.commit()
    return out.view(1, 1, config.d_model)
