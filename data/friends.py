"""Writes data/friends.txt, the small text the femto and pico presets train on.

Written for lucidlm and dedicated to the public domain (CC0): short sentences from a few patterns
in the style of the course's example "Emma hates games but she is a great friend", with enough
regularity (each name keeps its pronoun, likes and dislikes pair up) for a model with 2-D
embeddings to learn something in a minute. Run `python data/friends.py` to write it again; the
result is the same every time.
"""

import random
from pathlib import Path

NAMES = {"Emma": "she", "Lily": "she", "Mia": "she", "Noah": "he", "Jack": "he", "Leo": "he"}
THINGS = ["games", "books", "music", "dogs", "cats", "tea", "rain", "maths"]
GOOD = ["great", "good", "kind", "funny"]
BAD = ["loud", "rude", "late", "lazy"]


def sentence(rng: random.Random) -> str:
    name = rng.choice(list(NAMES))
    pronoun = NAMES[name]
    liked, hated = rng.sample(THINGS, 2)
    pattern = rng.randrange(5)
    if pattern == 0:
        return f"{name} hates {hated} but {pronoun} is a {rng.choice(GOOD)} friend."
    if pattern == 1:
        return f"{name} loves {liked} and {pronoun} hates {hated}."
    if pattern == 2:
        return f"{name} is {rng.choice(GOOD)} but sometimes {pronoun} is {rng.choice(BAD)}."
    if pattern == 3:
        other = rng.choice([n for n in NAMES if n != name])
        return f"{name} and {other} love {liked}."
    return f"{pronoun.capitalize()} loves {liked}, so {name} is happy."


def text() -> str:
    rng = random.Random(2026)
    return "\n".join(sentence(rng) for _ in range(1200)) + "\n"


def main() -> None:
    Path(__file__).with_name("friends.txt").write_text(text(), encoding="utf-8")


if __name__ == "__main__":
    main()
