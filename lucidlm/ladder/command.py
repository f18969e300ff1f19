"""`lucidlm ladder`: train the course's ladder, from n-grams to the baby GPT, on one corpus and
print what each rung buys."""

from __future__ import annotations

import argparse
import sys

from ..tokenizer import UNIT_TOKENIZERS
from .climb import PLOT_FILE, RESULTS_FILE, Ladder, format_table
from .ngram import SMOOTHINGS
from .rungs import DEFAULT_RUNGS, NEURAL, parse_rungs


def add_ladder_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train every rung of the ladder on one corpus and measure each on the same validation windows: "
        "n-gram counts (Kneser-Ney), a bigram network, a bag of context (uniform average), the bag with "
        "positions, one attention head, several heads, one transformer block and the baby GPT "
        f"(the shakespeare-char preset). Neural rungs: {', '.join(NEURAL)}; n-grams: ngram:N or ngram:A-B. "
        f"Prints the table and writes {RESULTS_FILE} and {PLOT_FILE} to --out.")
    parser.add_argument("--data", required=True, nargs="+", help="corpus file(s), UTF-8 text")
    parser.add_argument("--out", required=True, help="folder for the results (one subfolder per trained rung)")
    parser.add_argument("--rungs", default=DEFAULT_RUNGS, help=f"which rungs, in order (default: {DEFAULT_RUNGS})")
    parser.add_argument("--smoothing", default="kneser-ney", choices=SMOOTHINGS,
                        help="how the n-grams give unseen n-grams probability: interpolated Kneser-Ney (default, "
                             "discount 0.75) or add-k with k = 1 (Laplace)")
    parser.add_argument("--tokenizer", default="char", choices=[k for k in UNIT_TOKENIZERS if k != "words"],
                        help="one token per character (default), ASCII code point or byte")
    parser.add_argument("--max-iters", type=int, help="training steps per neural rung (default: the preset's 2000)")
    parser.add_argument("--seed", type=int, default=1337, help="weights, batches and samples (default 1337)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--force", action="store_true", help="climb again in an --out folder that is not empty")


def ladder_main(args: argparse.Namespace) -> int:
    rungs = parse_rungs(args.rungs, args.smoothing)
    ladder = Ladder(args.data, args.out, rungs, args.tokenizer, args.max_iters, args.seed, args.threads, args.force)
    rows = ladder.climb()
    print(format_table(rows))
    print(f"\nwrote {ladder.out / RESULTS_FILE} and {ladder.out / PLOT_FILE}")
    sys.stdout.flush()
    return 0
