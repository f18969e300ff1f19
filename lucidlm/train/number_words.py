"""A translation task lucidlm makes itself: English number words to French ones.

"three hundred and seventy-one" -> "trois cent soixante et onze". French counts in twenties from
sixty (soixante-dix is 60 + 10, quatre-vingt-dix 4 x 20 + 10), joins "et un" and "et onze" but not
"quatre-vingt-un", and pluralises "cents" and "quatre-vingts" only at the end of a number: a
translator must learn a structure, not a word list. Spellings follow the traditional rules (hyphens
below one hundred only).
"""

from __future__ import annotations

import random
from pathlib import Path

from ..errors import LucidError
from ..files import write_atomic

ENGLISH_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                "fifteen sixteen seventeen eighteen nineteen").split()
ENGLISH_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
FRENCH_ONES = ("zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze "
               "seize dix-sept dix-huit dix-neuf").split()
FRENCH_TENS = "_ _ vingt trente quarante cinquante soixante".split()
LARGEST = 999_999


def english(n: int) -> str:
    """0 <= n <= 999999 in British English words: 'one thousand two hundred and five'."""
    def below_thousand(n: int) -> str:
        hundreds, rest = divmod(n, 100)
        words = [f"{ENGLISH_ONES[hundreds]} hundred"] if hundreds else []
        if rest:
            tens, ones = divmod(rest, 10)
            small = ENGLISH_ONES[rest] if rest < 20 else ENGLISH_TENS[tens] + (f"-{ENGLISH_ONES[ones]}" if ones else "")
            words.append(("and " if hundreds else "") + small)
        return " ".join(words)

    _check(n)
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = [f"{below_thousand(thousands)} thousand"] if thousands else []
    if rest:
        words.append(("and " if thousands and rest < 100 else "") + below_thousand(rest))
    return " ".join(words)


def french(n: int) -> str:
    """0 <= n <= 999999 in French words (traditional spelling): 'mille deux cent cinq'."""
    def below_hundred(n: int, last: bool) -> str:
        if n < 20:
            return FRENCH_ONES[n]
        tens, ones = divmod(n, 10)
        if tens in (7, 9):  # soixante-dix, quatre-vingt-dix: counted from 60 and 80 plus 10..19
            base, ones = ("soixante", 10 + ones) if tens == 7 else ("quatre-vingt", 10 + ones)
            joiner = " et " if tens == 7 and ones == 11 else "-"
            return base + joiner + FRENCH_ONES[ones]
        if tens == 8:
            return "quatre-vingt" + (f"-{FRENCH_ONES[ones]}" if ones else ("s" if last else ""))
        return FRENCH_TENS[tens] + (" et un" if ones == 1 else f"-{FRENCH_ONES[ones]}" if ones else "")

    def below_thousand(n: int, last: bool) -> str:
        hundreds, rest = divmod(n, 100)
        words = []
        if hundreds:
            plural = "s" if hundreds > 1 and rest == 0 and last else ""
            words.append(("cent" if hundreds == 1 else f"{FRENCH_ONES[hundreds]} cent") + plural)
        if rest:
            words.append(below_hundred(rest, last))
        return " ".join(words)

    _check(n)
    if n == 0:
        return "zéro"
    thousands, rest = divmod(n, 1000)
    words = []
    if thousands:  # "mille" never takes an s; cent and vingt before it stay singular
        words.append("mille" if thousands == 1 else f"{below_thousand(thousands, last=False)} mille")
    if rest:
        words.append(below_thousand(rest, last=True))
    return " ".join(words)


def _check(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= LARGEST:
        raise LucidError(f"number words cover 0 to {LARGEST} (got {n!r})")


MOST_PAIRS = 200_000


def number_pairs(count: int, seed: int = 0) -> list[tuple[int, str, str]]:
    """`count` distinct numbers with their English and French words. The number of digits (1 to 6)
    is drawn uniformly, then a number of that length: short numbers are as common as long ones
    (uniform numbers would almost all have six digits)."""
    if not 1 <= count <= MOST_PAIRS:
        raise LucidError(f"the count of pairs must be between 1 and {MOST_PAIRS}")
    rng, seen, numbers = random.Random(seed), set(), []
    while len(numbers) < count:
        digits = rng.randint(1, 6)
        n = rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1)
        if n not in seen:  # a short length runs out of numbers: its draws then repeat and are skipped
            seen.add(n)
            numbers.append(n)
    return [(n, english(n), french(n)) for n in numbers]


def write_pairs(path: Path, pairs: list[tuple[int, str, str]]) -> None:
    """One pair per line: source, a tab, target (the format --objective seq2seq reads)."""
    write_atomic(path, "".join(f"{en}\t{fr}\n" for _, en, fr in pairs).encode("utf-8"))
