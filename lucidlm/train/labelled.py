"""Labelled texts for classification: JSONL records {"text": ..., "label": ...} (string or integer
labels), their label names, and a seeded split into training and test records that keeps every
label's share in both (stratified), as "Build a Large Language Model (from Scratch)" ch. 6 needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LucidError
from .conversations import read_records


@dataclass(frozen=True)
class Labelled:
    text: str
    label: int  # index into the label names


def read_labelled(path: Path) -> tuple[list[Labelled], list[str]]:
    """The records and the label names (class id -> name): integer labels in numeric order, string
    labels in sorted order. Refuses a record without text or label and a file with one label."""
    records = read_records(path)
    raw = []
    for record in records:
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip() or isinstance(label, bool) \
                or not isinstance(label, (str, int)) or (isinstance(label, str) and not label.strip()):
            raise LucidError(f"{path}, line {record['_line']}: a record needs \"text\" (a non-empty string) and "
                             f"\"label\" (a string or an integer)")
        raw.append((text, label))
    kinds = {type(label) for _, label in raw}
    if len(kinds) > 1:
        raise LucidError(f"{path}: labels are a mix of strings and integers; use one kind")
    names = [str(v) for v in sorted({label for _, label in raw})]
    if len(names) < 2:
        raise LucidError(f"{path}: every record has the label {names[0]!r}; a classifier needs at least two labels")
    index = {name: i for i, name in enumerate(names)}
    return [Labelled(text, index[str(label)]) for text, label in raw], names


def split_labelled(records: list[Labelled], names: list[str], test_fraction: float,
                   seed: int) -> tuple[list[Labelled], list[Labelled]]:
    """(train, test): each label's records shuffled by the seed, test_fraction of them held out (at
    least one of each label, and at least one left to train on)."""
    if not 0 < test_fraction < 1:
        raise LucidError(f"--test-fraction must be between 0 and 1 (got {test_fraction})")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label, name in enumerate(names):
        mine = [r for r in records if r.label == label]
        if len(mine) < 2:
            raise LucidError(f"too few records: the label {name!r} has {len(mine)}; every label needs at least 2 "
                             f"(one to train on, one to test)")
        held = min(max(int(round(len(mine) * test_fraction)), 1), len(mine) - 1)
        order = rng.permutation(len(mine))
        test += [mine[i] for i in order[:held]]
        train += [mine[i] for i in order[held:]]
    # subtle: one more seeded shuffle, so training batches mix the labels
    return [train[i] for i in rng.permutation(len(train))], test
