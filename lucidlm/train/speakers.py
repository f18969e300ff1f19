"""A labelled set made here, with no download: the speeches of data/tinyshakespeare.txt (Karpathy's
char-rnn corpus, about 40,000 lines of Shakespeare's plays, public domain), each labelled by who
speaks it, among a few frequent speakers of different plays. The speaker's name is cut off, so the
model must tell them apart by what they say and how. A seeded sample of each speaker's speeches
keeps the classes balanced (the majority baseline is then 1 / number of speakers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import LucidError

# The four most frequent speakers with speeches of 8 words or more (117 to 173 each), from
# Richard III and Henry VI, Measure for Measure, The Taming of the Shrew and Romeo and Juliet.
DEFAULT_SPEAKERS = ("GLOUCESTER", "DUKE VINCENTIO", "PETRUCHIO", "ROMEO")


def speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, speech) for every block "NAME:\\nlines..." of the corpus (blocks end at a blank line)."""
    out = []
    for block in text.split("\n\n"):
        head, _, body = block.strip("\n").partition("\n")
        if head.endswith(":") and body.strip():
            out.append((head[:-1].strip(), body.strip()))
    return out


def speaker_records(text: str, speakers: tuple[str, ...] = DEFAULT_SPEAKERS, per_speaker: int = 115,
                    min_words: int = 8, seed: int = 0) -> list[dict[str, str]]:
    """{"text", "label"} records: per_speaker speeches of min_words or more for each speaker, a seeded
    sample kept in corpus order, the speakers interleaved in that order."""
    found = [(who, speech) for who, speech in speeches(text) if len(speech.split()) >= min_words]
    rng = np.random.default_rng(seed)
    kept = []
    for who in speakers:
        positions = [i for i, (name, _) in enumerate(found) if name == who]
        if len(positions) < per_speaker:
            raise LucidError(f"{who!r} has {len(positions)} speeches of {min_words} words or more; "
                             f"ask for at most that many per speaker (--per-speaker)")
        kept += [positions[i] for i in rng.choice(len(positions), per_speaker, replace=False)]
    return [{"text": found[i][1], "label": found[i][0]} for i in sorted(kept)]


def write_speaker_records(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
