"""`lucidlm translate`: an encoder-decoder writes each text's target (greedy or beam search), or
measures its exact-match accuracy on a file of pairs (source<TAB>target per line)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import LucidError
from .files import add_input_errors_option, argument_text
from .flags import finite_number
from .generation import make_sampler
from .generation.seq2seq import generate_seq2seq
from .options import add_model_options, load_from_args


def translate(model, tokenizer, texts: list[str], num_beams: int = 1, max_tokens: int | None = None,
              length_penalty: float = 1.0, early_stopping: bool | str = False, temperature: float = 0.0,
              seed: int | None = None) -> list[str]:
    """Each text's translation, through the model's tokenizer (the source ends with the end token,
    as in training): greedy, sampled (temperature > 0) or by beam search (num_beams > 1)."""
    if tokenizer is None or tokenizer.eos_token_id is None:
        raise LucidError("translate needs the model's tokenizer, with an end token")
    eos = tokenizer.eos_token_id
    sources = [tokenizer.encode_ordinary(text) + [eos] for text in texts]
    outputs = generate_seq2seq(model, sources, max_tokens or model.config.context_length,
                               eos_token_ids=sorted(tokenizer.eos_token_ids | {eos}), num_beams=num_beams,
                               length_penalty=length_penalty, early_stopping=early_stopping,
                               pad_id=tokenizer.pad_token_id or 0, seed=seed,
                               sampler=make_sampler(temp=temperature) if temperature > 0 else None)
    return [tokenizer.decode([t for t in out if t not in tokenizer.eos_token_ids | {eos}]) for out in outputs]


def read_pairs(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LucidError(f"cannot read {path} as UTF-8 text ({exc})") from None
    pairs = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        if line.count("\t") != 1:
            raise LucidError(f"{path}, line {n}: expected source<TAB>target")
        source, target = line.split("\t")
        pairs.append((source, target))
    if not pairs:
        raise LucidError(f"{path} holds no pairs")
    return pairs


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="the texts to translate")
    parser.add_argument("--pairs", type=Path, help="a file of source<TAB>target lines: print the exact-match "
                                                     "accuracy of the model's translations")
    parser.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (default 1: greedy)")
    parser.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam search: a finished translation scores log-probability / length ** this")
    parser.add_argument("--early-stopping", choices=["true", "false", "never"], default="false",
                        help="beam search: stop once num_beams translations are finished (true); once no running "
                             "beam can beat the worst finished one at its current length (false, the default); "
                             "or at its best possible length (never), as transformers' generate")
    parser.add_argument("--max-tokens", type=int, help="longest translation, in tokens (default: the context)")
    parser.add_argument("--temp", type=float, default=0.0, help="sample at this temperature (default 0: greedy)")
    parser.add_argument("--seed", type=int, help="random seed for sampling")
    parser.add_argument("--show", type=int, default=5, help="with --pairs: wrong translations to show (default 5)")
    add_input_errors_option(parser)
    add_model_options(parser)


def translate_main(args: argparse.Namespace) -> int:
    if not args.texts and args.pairs is None:
        raise LucidError("give texts to translate, or --pairs FILE to measure exact match")
    if args.num_beams < 1 or (args.max_tokens is not None and args.max_tokens < 1):
        raise LucidError("--num-beams and --max-tokens must be at least 1")
    if not finite_number(args.temp) or args.temp < 0 or (args.temp > 0 and args.num_beams > 1):
        raise LucidError("--temp must be a finite number >= 0, and sampling does not mix with --num-beams")
    if not finite_number(args.length_penalty):
        raise LucidError(f"--length-penalty must be a finite number (got {args.length_penalty})")
    texts = [argument_text(t, args.errors, "a text") for t in args.texts]
    pairs = read_pairs(args.pairs) if args.pairs is not None else []
    model, tokenizer = load_from_args(args)
    if not model.config.is_encoder_decoder:
        raise LucidError("this model has no encoder: translate needs an encoder-decoder (try lucidlm generate)")
    early_stopping = {"true": True, "false": False, "never": "never"}[args.early_stopping]
    options = dict(num_beams=args.num_beams, max_tokens=args.max_tokens, length_penalty=args.length_penalty,
                   early_stopping=early_stopping, temperature=args.temp, seed=args.seed)
    for text, output in zip(texts, translate(model, tokenizer, texts, **options) if texts else []):
        print(f"{text} → {output}")
    if pairs:
        outputs = []
        for start in range(0, len(pairs), 64):
            outputs += translate(model, tokenizer, [source for source, _ in pairs[start:start + 64]], **options)
        wrong = [(s, o, t) for (s, t), o in zip(pairs, outputs) if o != t]
        for source, output, target in wrong[:max(0, args.show)]:
            print(f"  {source} → {output}  (expected: {target})")
        right = len(pairs) - len(wrong)
        print(f"exact match: {right}/{len(pairs)} = {right / len(pairs):.1%}")
    return 0
