"""`lucidlm eval perplexity` (a text file's perplexity with rolling windows) and `lucidlm eval run`
(in-context learning tasks at several shot counts: a table of acc/acc_norm or exact_match, and with
--show the rendered prompts with every choice's score). Models compute in float32 by default, so
the figures are the weights' own and match transformers and `lm_eval --model hf`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import LucidError
from ..options import add_model_options, load_from_args
from .harness import ItemResult, TaskResult, evaluate
from .score import text_perplexity
from .tasks import GENERATION, read_task

EVAL_DTYPE = "float32"


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.set_defaults(dtype=EVAL_DTYPE)
    for action in parser._actions:  # the shared help names "auto" as the default; evaluation's is float32
        if action.dest == "dtype":
            action.help = ("float32 (default for evaluation: a GGUF file's matrices dequantized, as transformers "
                           "reads them); auto keeps them quantized, as chat runs them; or bfloat16, float16")


def _causal_model(args: argparse.Namespace):
    model, tokenizer = load_from_args(args)
    if tokenizer is None:
        raise LucidError("this model has no tokenizer, so it cannot read text")
    return model, tokenizer


# --- perplexity ------------------------------------------------------------------------------------

def add_perplexity_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a UTF-8 text file")
    parser.add_argument("--window", type=int, help="tokens per forward pass (default: the model's context)")
    parser.add_argument("--stride", type=int, help="tokens between window starts; each window scores only its "
                                                   "last `stride` tokens, with the rest as context (default: half "
                                                   "the window)")
    parser.add_argument("--max-tokens", type=int, help="score only the text's first N tokens")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_model_options(parser)


def perplexity_main(args: argparse.Namespace) -> int:
    path = Path(args.data)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LucidError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise LucidError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    model, tokenizer = _causal_model(args)
    with tqdm(unit="tok", disable=args.quiet, file=sys.stderr, leave=False) as bar:
        result = text_perplexity(model, tokenizer, text, args.window, args.stride, args.max_tokens, bar.update)
    rolling = result.rolling
    print(f"file              {path}")
    print(f"tokens            {rolling.tokens:,} scored of {result.tokens_read:,} read "
          f"({result.bytes:,} bytes; the first token is context only)")
    print(f"window, stride    {result.window}, {result.stride} ({rolling.windows} forward passes)")
    print(f"nats/token        {rolling.nats_per_token:.4f}")
    print(f"perplexity        {rolling.perplexity:.4f}")
    print(f"bits per byte     {result.bits_per_byte:.4f}")
    return 0


# --- run -------------------------------------------------------------------------------------------

def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", required=True, metavar="FILE",
                        help="JSONL task files (a FILE.description.txt beside one is its description)")
    parser.add_argument("--shots", default="0", help="comma-separated example counts, e.g. 0,1,5 (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="which examples each query gets (default 0)")
    parser.add_argument("--limit", type=int, help="score only each task's first N queries")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="print the first N prompts of each task and shot count, with every choice's score")
    parser.add_argument("--chat", action="store_true",
                        help="render each prompt as a multi-turn chat with the model's chat template")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs scored in one forward pass (default 16)")
    _add_model_options(parser)


def _shots(text: str) -> list[int]:
    try:
        shots = [int(part) for part in text.split(",")]
    except ValueError:
        raise LucidError(f"--shots takes counts like 0,1,5 (got {text!r})") from None
    if any(k < 0 for k in shots):
        raise LucidError(f"--shots counts cannot be negative (got {text!r})")
    return shots


def show_item(result: TaskResult, item: ItemResult) -> str:
    """One fully rendered prompt and why the model answered as it did."""
    prompt = item.prompt
    lines = [f"--- {result.task.name}, {result.shots}-shot, item {prompt.query} "
             f"(examples: {', '.join(map(str, prompt.examples)) or 'none'}) ---", prompt.text, "---"]
    if result.task.kind == GENERATION:
        verdict = "match" if item.exact_match else "no match"
        lines += [f"generated: {item.generated!r}", f"target:    {item.choices[item.answer]!r}   ({verdict})"]
        return "\n".join(lines)
    width = max(6, *(len(c) for c in item.choices))
    lines.append(f"    {'choice':<{width}}  {'log-likelihood':>14}  {'per char':>9}")
    for i, (choice, s, norm) in enumerate(zip(item.choices, item.scores, item.per_char)):
        picked = [name for name, j in (("acc", item.chosen), ("acc_norm", item.chosen_norm)) if j == i]
        mark = "*" if i == item.answer else " "
        lines.append(f"  {mark} {choice:<{width}}  {s.logprob:>14.4f}  {norm:>9.4f}"
                     + (f"  <- {', '.join(picked)}" if picked else ""))
    lines.append("  (* the answer; <- the model's choice by log-likelihood (acc) and per character (acc_norm))")
    return "\n".join(lines)


def table(results: list[TaskResult]) -> str:
    name_width = max(4, *(len(r.task.name) for r in results))
    rows = [f"{'task':<{name_width}}  {'shots':>5}  {'n':>4}  {'acc':>6}  {'acc_norm':>8}  {'exact_match':>11}"]
    for r in results:
        m = r.metrics
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in ("acc", "acc_norm", "exact_match")]
        rows.append(f"{r.task.name:<{name_width}}  {r.shots:>5}  {len(r.items):>4}  {cells[0]:>6}  {cells[1]:>8}  "
                    f"{cells[2]:>11}")
    return "\n".join(rows)


def run_main(args: argparse.Namespace) -> int:
    shots = _shots(args.shots)
    if args.show < 0 or args.batch_size < 1:
        raise LucidError("--show must be 0 or more and --batch-size at least 1")
    if args.limit is not None and args.limit < 1:
        raise LucidError(f"--limit must be at least 1 (got {args.limit})")
    tasks = [read_task(path) for path in args.tasks]  # every file checked before the model loads
    for task in tasks:
        if max(shots) > len(task.items) - 1:
            raise LucidError(f"{task.name}: {max(shots)} shots need {max(shots) + 1} items, "
                             f"but the task has {len(task.items)}")
    model, tokenizer = _causal_model(args)
    results = []
    for task in tasks:
        for k in shots:
            result = evaluate(model, tokenizer, task, k, args.seed, args.limit, args.chat, args.batch_size)
            results.append(result)
            for item in result.items[:args.show]:
                print(show_item(result, item) + "\n")
    print(table(results))
    return 0
