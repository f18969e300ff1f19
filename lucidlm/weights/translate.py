"""Apply a name table: source tensors -> our state dict (loading), and back (export).

Loading is strict: a source tensor that no row claims, or a tensor of ours that no source fills,
is an error that names it; so is a shape that does not match the model.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator

import torch

from ..config import FUSED_PARTS, Config
from ..errors import FormatError
from .name_tables import NameTable
from .row_blocks import RowBlocks

ROW_TRANSFORMS = ("unpermute_q", "unpermute_k", "drop_2_rows")  # reorder or drop whole rows only


def unpermute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's query/key row order: per head, rows (0, D/2, 1, D/2+1, ...) -> (0, 1, ..., D-1).

    llama.cpp interleaves the two halves of each head so its rotary kernel can rotate adjacent
    pairs; we rotate (i, i + D/2) pairs as the reference implementation does.
    """
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of unpermute (llama.cpp's own order)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _transform(t: torch.Tensor, transforms: tuple[str, ...], config: Config, inverse: bool = False) -> torch.Tensor:
    """Apply a row's transforms in order (or their inverses in reverse order, for export)."""
    if isinstance(t, RowBlocks):
        return t.map_rows(lambda data: _transform(data, transforms, config, inverse))
    for name in (reversed(transforms) if inverse else transforms):
        if name == "transpose":
            t = t.t().contiguous()
        elif name == "drop_2_rows":  # rows 0 and 1 are never looked up; export writes zeros there
            t = torch.cat((t.new_zeros(2, *t.shape[1:]), t)) if inverse else t[2:]
        elif name == "flatten":
            t = t[None] if inverse else t.reshape(-1)
        elif name == "add_one":  # a norm that scales by (1 + w) (Gemma) is ours with weight 1 + w
            t = (t.float() - 1 if inverse else t.float() + 1).to(t.dtype)
        else:
            heads = config.n_heads if name == "unpermute_q" else config.n_kv_heads
            t = permute(t, heads) if inverse else unpermute(t, heads)
    return t


def _fused_key(target: str) -> str | None:
    """'blocks.3.attn.qkv.weight' -> 'attn.qkv'."""
    for key in FUSED_PARTS:
        if f".{key}." in f".{target}":
            return key
    return None


def check_finite(tensor: torch.Tensor, name: str, origin: str) -> None:
    """A NaN or infinity in the weights means a corrupt file (a flipped scale in a quantized block
    dequantizes to NaN); refuse it rather than run a silently broken model. One sum is enough:
    real weights never sum past float32's range."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())):
        raise FormatError(f"{origin}: tensor {name} holds NaN or infinite values (a corrupt file?)")


def count_layers(table: NameTable, source_names: Iterable[str], placeholder: str = "{i}") -> int:
    """How many layers (or encoder layers, with "{e}") the source's tensor names describe (highest
    layer index + 1)."""
    escaped = re.escape(placeholder)
    patterns = [re.compile(re.escape(row.source).replace(escaped, r"(\d+)")) for row in table.rows
                if placeholder in row.source]
    highest = -1
    for name in source_names:
        for candidate in table.spellings(name):
            for pattern in patterns:
                match = pattern.fullmatch(candidate)
                if match:
                    highest = max(highest, int(match.group(1)))
    return highest + 1


def to_ours(table: NameTable, config: Config, source_names: Iterable[str], read: Callable[[str], torch.Tensor],
            expected: dict[str, tuple[int, ...]], dtype: torch.dtype,
            origin: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Translate every source tensor to our names; `expected` maps our names to shapes. Yields
    (our name, tensor) as each is complete, then fails if a tensor was unexpected or missing.

    `read(name)` loads one source tensor, so a consumer that takes each yielded tensor in (the
    loader) holds only one tensor, plus the parts of one fused tensor, beyond the model.
    """
    rows = table.expand(config.n_layers, config.encoder_layers)
    parts: dict[str, dict[str | None, torch.Tensor]] = {}
    done: set[str] = set()
    unexpected = []
    for name in source_names:
        row = next((rows[key] for key in table.spellings(name) if key in rows), None)
        if row is None:
            if not table.ignored(name):
                unexpected.append(name)
            continue
        if row.target not in expected:
            if row.target == "lm_head.weight" and config.tie_embeddings:
                continue  # a tied head is the embedding; a stored copy adds nothing
            if row.zero_if_absent and not bool(read(name).any()):
                continue  # an all-zero bias in a layout that always has one: our model has none
            unexpected.append(name)
            continue
        got = parts.setdefault(row.target, {})
        source = read(name)
        if isinstance(source, RowBlocks):
            source.check_finite(name, origin)
            if any(t not in ROW_TRANSFORMS for t in row.transform):
                source = source.dequantize()  # a transpose or reshape needs the numbers
        else:
            check_finite(source, name, origin)
        try:
            got[row.part] = _transform(source if isinstance(source, RowBlocks) else source.to(dtype),
                                       row.transform, config)
        except RuntimeError:  # e.g. a row count the head split cannot divide
            raise FormatError(f"{origin}: tensor {name} has shape {tuple(source.shape)}, which does not fit "
                              f"the config") from None
        # Assemble a tensor as soon as its last part arrives, so the parts of only one fused
        # tensor are ever held beside the result.
        order = FUSED_PARTS[_fused_key(row.target)] if row.part is not None else (None,)
        if all(p in got for p in order):
            try:
                tensor = got[None] if row.part is None else _stack_rows([got[p] for p in order], dtype)
            except (RuntimeError, ValueError):
                shapes = ", ".join(f"{p}: {tuple(got[p].shape)}" for p in order)
                raise FormatError(f"{origin}: the parts of {row.target} do not fit together ({shapes})") from None
            del parts[row.target]
            if tuple(tensor.shape) != tuple(expected[row.target]):
                raise FormatError(f"{origin}: tensor for {row.target} has shape {tuple(tensor.shape)}, "
                                  f"the config says {tuple(expected[row.target])}")
            done.add(row.target)
            yield row.target, tensor
    if unexpected:
        raise FormatError(f"{origin}: unexpected tensor(s) for this {table.name} model: "
                          f"{_names(unexpected)}")
    missing = [f"{target} (part {', '.join(p for p in FUSED_PARTS[_fused_key(target)] if p not in got)})"
               for target, got in parts.items()]
    missing += [target for target in expected if target not in done and target not in parts]
    if missing:
        sources = {row.target: src for src, row in rows.items()}
        named = [f"{m} (from {sources.get(m.split(' ')[0], '?')})" for m in missing]
        raise FormatError(f"{origin}: missing tensor(s): {_names(named)}")


def _stack_rows(parts: list, dtype: torch.dtype):
    """The parts of a fused tensor, rows stacked: still blocks when all of them are."""
    if all(isinstance(p, RowBlocks) for p in parts):
        return RowBlocks.cat(parts)
    return torch.cat([p.dequantize().to(dtype) if isinstance(p, RowBlocks) else p for p in parts], dim=0)


def to_source(table: NameTable, config: Config, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict -> the table's source names (for export). Fused tensors are split back (by
    output rows), and layouts that always carry a bias get zeros where our model has none."""
    out = {}
    for source, row in table.expand(config.n_layers, config.encoder_layers).items():
        tensor = state.get(row.target)
        if tensor is None:
            if row.zero_if_absent:
                weight = state[row.target.rsplit(".", 1)[0] + ".weight"]
                out[source] = torch.zeros(weight.shape[0], dtype=weight.dtype)
            continue  # an optional tensor (a bias we do not have, a tied head)
        if row.part is not None:
            start, stop = config.part_rows(_fused_key(row.target))[row.part]
            tensor = tensor[start:stop]
        out[source] = _transform(tensor, row.transform, config, inverse=True).contiguous()
    return out


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
