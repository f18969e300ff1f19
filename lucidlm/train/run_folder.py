"""The run folder: everything one training run writes, and checkpoints that lose nothing.

    runs/shk/
      run.json                  settings, model config, the latest and best checkpoints
      lucidlm-tokenizer.json    the tokenizer (also in every checkpoint)
      data/                     token shards (train.bin, val.bin) and their metadata
      checkpoints/step-0000250/ model (our format) + trainer.pt (optimizer, RNG, data position)
      metrics.jsonl, loss.png, samples.txt

A checkpoint is written into a temporary folder and renamed into place, and run.json is updated
only after that, so a crash or a full disk mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import LucidError
from ..files import read_json, write_atomic
from ..locate import CHECKPOINT_FILE, RUN_FILE
from ..weights.checkpoint import atomic_folder, write_checkpoint
from ..weights.sources import checkpoints_on_disk

TRAINER_STATE = "trainer.pt"


class RunFolder:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @property
    def info_path(self) -> Path:
        return self.path / RUN_FILE

    def is_run(self) -> bool:
        return self.info_path.exists()

    def claim(self, force: bool) -> None:
        """Make the folder ours for a new run; never silently overwrite another run."""
        if self.path.exists() and not self.path.is_dir():
            raise LucidError(f"{self.path} is a file, not a folder: give --out a folder")
        if self.path.exists() and any(self.path.iterdir()):
            if not force:
                what = "holds another training run" if self.is_run() else "is not empty"
                raise LucidError(f"{self.path} {what}; continue it with --resume {self.path}, "
                                 f"or pass --force to start over there")
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, Any]:
        if not self.is_run():
            raise LucidError(f"{self.path} is not a training run (no {RUN_FILE})")
        info = read_json(self.info_path)
        if not isinstance(info.get("settings"), dict) or not isinstance(info.get("checkpoints", []), list):
            raise LucidError(f"{self.info_path} is not a run description (no settings, or a broken checkpoint list)")
        return info

    def write(self, info: dict[str, Any]) -> None:
        write_atomic(self.info_path, json.dumps(info, indent=2))

    def save_checkpoint(self, step: int, model, tokenizer, trainer_state: dict[str, Any], is_best: bool,
                        keep_last: int, extra: dict[str, Any]) -> Path:
        name = f"checkpoints/step-{step:07d}"
        info = self.read()
        try:
            with atomic_folder(self.path / name) as tmp:
                write_checkpoint(model, tokenizer, tmp, extra)
                torch.save(trainer_state, tmp / TRAINER_STATE)
        except OSError as exc:
            kept = info.get("latest") or "none yet"
            raise LucidError(f"could not write the checkpoint at step {step} ({exc.strerror or exc}); "
                             f"the previous checkpoint ({kept}) is intact") from None
        info["latest"] = name
        if is_best:
            info["best"] = name
        # The disk is the truth: a checkpoint a kill left out of run.json is pruned like the others.
        names = [p.relative_to(self.path).as_posix() for p in checkpoints_on_disk(self.path)]
        keep = set(names[-keep_last:]) | {name} | ({info["best"]} if info.get("best") else set())
        info["checkpoints"] = [n for n in names if n in keep]
        # run.json first, then the pruning: a kill in between leaves extra folders, never a
        # run.json that names a deleted checkpoint.
        self.write(info)
        for old in names:
            if old not in keep:
                shutil.rmtree(self.path / old, ignore_errors=True)
        return self.path / name

    def clean_partial(self) -> list[Path]:
        """Remove half-written checkpoint folders left by a process that was killed mid-save."""
        partial = [p for p in (self.path / "checkpoints").glob(".*.tmp-*") if p.is_dir()] \
            if (self.path / "checkpoints").exists() else []
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)
        return partial

    def latest(self) -> Path:
        """The checkpoint to resume from: the one run.json names, or, when a kill left run.json
        behind the disk, the newest complete checkpoint on disk."""
        info = self.read()
        name = info.get("latest")
        if isinstance(name, str) and self._complete(self.path / name):
            return self.path / name
        found = [p for p in checkpoints_on_disk(self.path) if self._complete(p)]
        if not found:
            raise LucidError(f"{self.path} has no checkpoint to resume from")
        return found[-1]

    @staticmethod
    def _complete(checkpoint: Path) -> bool:
        return (checkpoint / CHECKPOINT_FILE).exists() and (checkpoint / TRAINER_STATE).exists()

    @staticmethod
    def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
        # Our own file, and still read with weights_only=True: tensors and plain containers only.
        try:
            state = torch.load(checkpoint / TRAINER_STATE, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file fails in pickle, zip or torch, each its own way
            raise LucidError(f"{checkpoint / TRAINER_STATE} is unreadable ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if not isinstance(state, dict):
            raise LucidError(f"{checkpoint / TRAINER_STATE} is not a trainer state")
        return state

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """The records, skipping any line that is not one (a kill mid-write leaves half a line)."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def truncate_metrics(self, step: int) -> None:
        """On resume, forget records written after the checkpoint (they will be written again)."""
        records = [r for r in self.read_metrics() if r["step"] <= step]
        write_atomic(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in records))
