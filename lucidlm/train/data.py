"""Training data: a corpus tokenized once into memory-mapped token shards, then cut into
next-token windows (inputs, and the same tokens shifted by one as targets).

Each file is a document (and --doc-separator splits files further). A window never spans two
documents: a short document gives one window padded on the right, with its padded targets masked
out of the loss. Windows start every `stride` tokens and are drawn at random (as nanoGPT does)
or in order.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import FormatError, LucidError, reading
from ..files import read_json, write_atomic

META_FILE = "meta.json"


def read_corpus(paths: Sequence[Path], separator: str | None) -> list[str]:
    """Documents from UTF-8 files, with a clear error for anything else."""
    documents = []
    for path in paths:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LucidError(f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None
        parts = text.split(separator) if separator else [text]
        documents.extend(p for p in parts if p)
    if not documents:
        raise LucidError(f"the corpus is empty ({', '.join(str(p) for p in paths)})")
    return documents


def _fingerprint(paths: Sequence[Path], tokenizer, val_fraction: float, separator: str | None,
                 encoding: str | None = None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    extra = [encoding] if encoding else []  # none: the fingerprints of earlier runs stay valid
    digest.update(json.dumps([tokenizer.vocab_size, repr(tokenizer), val_fraction, separator, *extra]).encode())
    return digest.hexdigest()


@dataclass
class Split:
    """One split's tokens (memory-mapped) and where its documents start."""

    tokens: np.ndarray
    doc_starts: np.ndarray  # int64, ascending, first is 0

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize_corpus(paths: Sequence[Path], tokenizer, separator: str | None,
                    encode: Callable[[str], list[int]] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """All documents' ids in one array (each followed by EOS when the tokenizer has one), where
    each document starts, and how many there are. encode: how a document becomes ids (default:
    the tokenizer's encode_ordinary; an objective may structure it)."""
    documents = read_corpus(paths, separator)
    eos = tokenizer.eos_token_id
    encode = encode or tokenizer.encode_ordinary
    pieces, starts, total = [], [], 0
    for doc in documents:
        ids = encode(doc)
        if eos is not None:
            ids = ids + [eos]  # the model learns where a document ends
        starts.append(total)
        pieces.append(np.asarray(ids, dtype=np.int64))
        total += len(ids)
    return np.concatenate(pieces), np.asarray(starts, dtype=np.int64), len(documents)


def prepare(paths: Sequence[Path], tokenizer, folder: Path, val_fraction: float,
            separator: str | None = None, encode: Callable[[str], list[int]] | None = None) -> dict:
    """Tokenize the corpus into folder/{train,val}.bin (+ document offsets), unless a previous
    run already did so for the same files, tokenizer and encoding. Returns the metadata."""
    fingerprint = _fingerprint(paths, tokenizer, val_fraction, separator, getattr(encode, "__qualname__", None))
    meta_path = folder / META_FILE
    if meta_path.exists():
        try:
            meta = read_json(meta_path)
        except FormatError:  # damaged: the shards are prepared again
            meta = {}
        if meta.get("fingerprint") == fingerprint:
            return meta
    tokens, doc_starts, n_documents = tokenize_corpus(paths, tokenizer, separator, encode)
    if tokens.size and int(tokens.max()) >= tokenizer.vocab_size:
        raise LucidError("the tokenizer produced an id outside its own vocabulary")
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    n_train = int(len(tokens) * (1 - val_fraction))  # the first 90% trains, as in nanoGPT
    if encode is not None and n_train < len(tokens):
        # Structured documents (pairs) are records, never cut: the split moves to the next one's start.
        later = doc_starts[doc_starts >= n_train]
        n_train = int(later[0]) if len(later) else len(tokens)
    n_val = len(tokens) - n_train
    folder.mkdir(parents=True, exist_ok=True)
    splits = {"train": (tokens[:n_train], doc_starts[doc_starts < n_train]),
              "val": (tokens[n_train:], np.unique(np.concatenate([[0], doc_starts[doc_starts >= n_train] - n_train]))
                      if n_val else np.zeros(1, dtype=np.int64))}
    for name, (split_tokens, split_starts) in splits.items():
        write_atomic(folder / f"{name}.bin", split_tokens.astype(dtype).tobytes())
        write_atomic(folder / f"{name}.docs.npy", _npy_bytes(split_starts.astype(np.int64)))
    meta = {"fingerprint": fingerprint, "dtype": np.dtype(dtype).name, "vocab_size": tokenizer.vocab_size,
            "train_tokens": int(n_train), "val_tokens": int(n_val), "documents": n_documents,
            "files": [str(p) for p in paths]}
    write_atomic(meta_path, json.dumps(meta, indent=2).encode())
    return meta


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def open_split(folder: Path, name: str) -> Split:
    meta = read_json(folder / META_FILE)
    path = folder / f"{name}.bin"
    with reading(folder, "token shards"):
        tokens = np.memmap(path, dtype=meta["dtype"], mode="r") if path.stat().st_size else np.zeros(0, np.uint16)
        return Split(tokens, np.load(folder / f"{name}.docs.npy", allow_pickle=False))


class Windows:
    """All windows of one split: window k is (inputs, targets, mask), each (T,).

    Window starts step by `stride` inside each document; the last window of a document (or the
    only one of a short document) may be padded on the right with `pad_id`, its padding masked.
    """

    def __init__(self, split: Split, window: int, stride: int, pad_id: int = 0) -> None:
        self.split, self.window, self.stride, self.pad_id = split, window, stride, pad_id
        ends = np.append(split.doc_starts[1:], len(split)).astype(np.int64)
        lengths = ends - split.doc_starts
        # Full windows need T + 1 tokens (a document of n tokens has n - 1 targets). When they
        # leave targets uncovered at the document's end, one more, padded, window takes them.
        full = np.where(lengths >= window + 1, (lengths - window - 1) // stride + 1, 0)
        covered = np.where(full > 0, (full - 1) * stride + window + 1, 1)
        tail = (lengths > covered) & (full * stride < lengths - 1)
        counts = full + tail
        self.doc_starts, self.doc_ends = split.doc_starts, ends
        self.cumulative = np.cumsum(counts)
        self.count = int(self.cumulative[-1]) if len(counts) else 0

    def __len__(self) -> int:
        return self.count

    def locate(self, k: int) -> tuple[int, int]:
        """Window k -> (start, end) token offsets of its document-bounded span."""
        doc = int(np.searchsorted(self.cumulative, k, side="right"))
        first = k - (int(self.cumulative[doc - 1]) if doc else 0)
        start = int(self.doc_starts[doc]) + first * self.stride
        return start, min(start + self.window + 1, int(self.doc_ends[doc]))

    def rows(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The windows' tokens, (B, T + 1) padded with pad_id, and how many of each are real (B,)."""
        rows = np.full((len(indices), self.window + 1), self.pad_id, dtype=np.int64)
        lengths = np.zeros(len(indices), dtype=np.int64)
        for r, k in enumerate(indices):
            start, end = self.locate(int(k))
            rows[r, : end - start] = self.split.tokens[start:end]
            lengths[r] = end - start
        return rows, lengths

    def get(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs, targets, mask: (B, T) each; mask is 1 where the target is a real token."""
        rows, lengths = self.rows(indices)
        data = torch.from_numpy(rows)
        mask = torch.arange(self.window)[None, :] < torch.from_numpy(lengths - 1)[:, None]
        return data[:, :-1], data[:, 1:], mask

    def batch(self, indices: Sequence[int], generator: torch.Generator, keep: slice) -> dict[str, torch.Tensor]:
        """A training batch of the windows indices[keep] (this process's share of a global batch)."""
        inputs, targets, mask = self.get(indices[keep])
        return {"inputs": inputs, "targets": targets, "mask": mask}


class Batches:
    """Draws global batches of window indices, random or in order, and hands each process its
    share. Its whole state is a generator state and a position, both saved in checkpoints.

    `data` is any dataset with len() and batch(indices, generator, keep): next-token windows, or
    windows whose tokens an objective masks at random (drawing from this generator too, so a
    resumed run draws the same masks)."""

    def __init__(self, data, batch_size: int, mode: str, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if len(data) == 0:
            raise LucidError("the data is shorter than one window: need at least 2 tokens per document")
        self.data, self.batch_size, self.mode = data, batch_size, mode
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.position = 0  # next window, in ordered mode

    def next(self) -> dict[str, torch.Tensor]:
        # Every process draws the same global batch and keeps its own rows, so N processes see
        # exactly the batch one process with N times the batch size would.
        n = self.batch_size * self.world_size
        if self.mode == "random":
            chosen = torch.randint(len(self.data), (n,), generator=self.generator).tolist()
        else:
            chosen = [(self.position + i) % len(self.data) for i in range(n)]
            self.position = (self.position + n) % len(self.data)
        return self.data.batch(chosen, self.generator, slice(self.rank * self.batch_size,
                                                             (self.rank + 1) * self.batch_size))

    def state(self) -> dict:
        return {"generator": self.generator.get_state(), "position": self.position}

    def restore(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.position = int(state["position"])
