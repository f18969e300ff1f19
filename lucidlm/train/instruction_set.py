"""A small instruction set written for lucidlm, generated without downloads: short questions of six
kinds (capitals, sums, capital letters, opposites, plurals, next letters) whose answer is one word
or number, so a script can score answers by exact match.

The tables are written by hand for this project (capitals as of 2026; irregular plurals and
antonyms from common English). Held-out records use items (countries, words, number pairs) that no
training record uses, so a fine-tuned model is measured on questions it never saw.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..files import write_atomic

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Canada": "Ottawa", "Mexico": "Mexico City", "Peru": "Lima", "Chile": "Santiago", "Argentina": "Buenos Aires",
    "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Austria": "Vienna", "Hungary": "Budapest", "Ireland": "Dublin", "Belgium": "Brussels",
    "the Netherlands": "Amsterdam", "Switzerland": "Bern", "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad",
    "India": "New Delhi", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "South Korea": "Seoul", "Australia": "Canberra", "New Zealand": "Wellington",
    "Brazil": "Brasília", "Colombia": "Bogotá", "Cuba": "Havana", "Morocco": "Rabat", "Nigeria": "Abuja",
    "Ethiopia": "Addis Ababa", "Ghana": "Accra", "Senegal": "Dakar", "Ukraine": "Kyiv", "Romania": "Bucharest",
    "Bulgaria": "Sofia", "Serbia": "Belgrade", "Croatia": "Zagreb", "Czechia": "Prague", "Slovakia": "Bratislava",
    "Iceland": "Reykjavik", "Scotland": "Edinburgh", "Wales": "Cardiff", "Pakistan": "Islamabad",
    "Bangladesh": "Dhaka", "Nepal": "Kathmandu", "Saudi Arabia": "Riyadh",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "light": "dark", "early": "late",
    "open": "closed", "full": "empty", "high": "low", "old": "young", "hard": "soft", "wet": "dry",
    "rich": "poor", "strong": "weak", "thick": "thin", "loud": "quiet", "long": "short", "clean": "dirty",
    "first": "last", "push": "pull", "up": "down", "win": "lose", "buy": "sell", "give": "take",
    "true": "false", "inside": "outside", "above": "below", "begin": "end", "remember": "forget",
    "friend": "enemy", "day": "night", "north": "south", "east": "west", "left": "right", 
    "cheap": "expensive", "safe": "dangerous", "alive": "dead", "asleep": "awake", "increase": "decrease",
}
PLURALS = {
    "cat": "cats", "dog": "dogs", "child": "children", "mouse": "mice", "box": "boxes", "city": "cities",
    "man": "men", "woman": "women", "tooth": "teeth", "foot": "feet", "goose": "geese", "leaf": "leaves",
    "knife": "knives", "wolf": "wolves", "baby": "babies", "bus": "buses", "church": "churches",
    "potato": "potatoes", "hero": "heroes", "sheep": "sheep", "fish": "fish", "person": "people", "ox": "oxen",
    "story": "stories", "glass": "glasses", "dish": "dishes", "key": "keys", "toy": "toys", "day": "days",
    "wife": "wives", "life": "lives", "half": "halves", "party": "parties", "watch": "watches",
    "class": "classes", "fox": "foxes", "lady": "ladies", "book": "books", "tree": "trees", "house": "houses",
}
WORDS = ["apple", "river", "garden", "window", "pencil", "rocket", "silver", "summer", "forest", "planet",
         "yellow", "bridge", "candle", "dragon", "jungle", "kitten", "lemon", "marble", "number", "orange",
         "pepper", "quiet", "rabbit", "saddle", "tomato", "violin", "wizard", "zebra", "anchor", "basket",
         "cactus", "dinner", "engine", "falcon", "guitar", "helmet", "island", "jacket", "ladder", "magnet"]
LETTERS = "abcdefghijklmnopqrstuvwxy"  # z has no next letter

KINDS = ("capital", "sum", "upper", "opposite", "plural", "next-letter")


def _questions(kind: str, item) -> tuple[str, str]:
    if kind == "capital":
        return f"What is the capital of {item}? Answer with the city only.", CAPITALS[item]
    if kind == "sum":
        a, b = item
        return f"What is {a} plus {b}? Answer with the number only.", str(a + b)
    if kind == "upper":
        return f"Write the word '{item}' in capital letters. Answer with the word only.", item.upper()
    if kind == "opposite":
        return f"What is the opposite of '{item}'? Answer with one word.", OPPOSITES[item]
    if kind == "plural":
        return f"What is the plural of '{item}'? Answer with one word.", PLURALS[item]
    return f"Which letter comes after '{item}' in the alphabet? Answer with the letter only.", \
        chr(ord(item) + 1)


def _items(kind: str, rng: random.Random) -> list:
    if kind == "capital":
        return sorted(CAPITALS)
    if kind == "opposite":
        return sorted(OPPOSITES)
    if kind == "plural":
        return sorted(PLURALS)
    if kind == "upper":
        return list(WORDS)
    if kind == "next-letter":
        return list(LETTERS)
    return sorted({(rng.randint(10, 89), rng.randint(10, 89)) for _ in range(60)})[:50]


def instruction_records(held_out_per_kind: int = 5, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training records, held-out records): each {"instruction", "output", "kind"}. The held-out
    items of each kind are drawn with the seed and never appear in training."""
    rng = random.Random(seed)
    train, held = [], []
    for kind in KINDS:
        items = _items(kind, rng)
        rng.shuffle(items)
        for k, item in enumerate(items):
            question, answer = _questions(kind, item)
            (held if k < held_out_per_kind else train).append({"instruction": question, "output": answer,
                                                               "kind": kind})
    rng.shuffle(train)
    return train, held


def write_records(path: Path, records: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
