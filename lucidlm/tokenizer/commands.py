"""`lucidlm tokenize` (see how text becomes tokens) and `lucidlm tokenizer train`.

The view for people colours each token and shows its id and its text with spaces, tabs, newlines
and partial UTF-8 bytes made visible; --ids prints ids only, for scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..default_model import default_model_path
from ..errors import LucidError
from ..files import add_input_errors_option, argument_text, read_stdin
from .pretokenizer import NAMED
from .tokenizer import UNIT_TOKENIZERS, Tokenizer, load_tokenizer, unit_tokenizer
from .wordpiece import SPECIALS as WORDPIECE_SPECIALS, WordPieceTokenizer

COLOURS = [44, 42, 45, 46, 43, 41]  # ANSI background colours, cycled per token


def _use_colour(mode: str) -> bool:
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def visible_piece(data: bytes) -> str:
    """A token's bytes as text a person can read: · for a space, ⇥ tab, ↵ newline, <0xE2> for a
    byte that is not a whole UTF-8 character on its own."""
    out = []
    text = data.decode("utf-8", errors="surrogateescape")
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, smuggled by surrogateescape
            out.append(f"<0x{code - 0xDC00:02X}>")
        elif ch == " ":
            out.append("·")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\n":
            out.append("↵")
        elif ch == "\r":
            out.append("␍")
        elif not ch.isprintable():
            out.append(f"<U+{code:04X}>")
        else:
            out.append(ch)
    return "".join(out)


def render_tokens(tokenizer, ids: list[int], colour: bool) -> str:
    """Two views: the text with one colour per token, then one line per token."""
    pieces = [visible_piece(tokenizer.token_bytes(i)) for i in ids]
    if colour:
        strip = "".join(f"\x1b[30;{COLOURS[n % len(COLOURS)]}m{p}\x1b[0m" for n, p in enumerate(pieces))
    else:
        strip = "|".join(pieces)
    width = max((len(str(i)) for i in ids), default=2)
    rows = [f"{n:>5}  {i:>{width}}  {p}{'  (special)' if tokenizer.is_special(i) else ''}"
            for n, (i, p) in enumerate(zip(ids, pieces))]
    chars = len(tokenizer.decode(ids))
    header = f"{len(ids)} tokens for {chars} characters"
    return "\n".join([strip, "", header, f"{'#':>5}  {'id':>{width}}  piece", *rows])


def load_any_tokenizer(args: argparse.Namespace, text: str = ""):
    """--tokenizer or --model's tokenizer; a named unit tokenizer (char, words) learns its
    vocabulary from the text itself, so every unit is known."""
    if args.tokenizer and args.model:
        raise LucidError("give --tokenizer or --model, not both")
    if args.tokenizer in UNIT_TOKENIZERS:
        return unit_tokenizer(args.tokenizer, text)
    source = args.tokenizer or args.model
    return load_tokenizer(Path(source) if source else default_model_path())


def add_tokenize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text to tokenize (default: read standard input)")
    parser.add_argument("--model", "-m", help="take the tokenizer of this model (GGUF file or model folder)")
    parser.add_argument("--tokenizer", "-t", help="a tokenizer folder or file (ours, tokenizer.json, GGUF, *.tiktoken), "
                                                  "or one id per unit: 'ascii' (code points 0-127), 'bytes' (UTF-8 "
                                                  "bytes), 'char' or 'words' (their vocabulary: the text's own)")
    parser.add_argument("--ids", action="store_true", help="print only the ids, space-separated")
    parser.add_argument("--allow-special", action="store_true",
                        help="treat special-token strings in the text as special tokens (default: plain text)")
    parser.add_argument("--decode", action="store_true", help="the input is ids; print the text they make")
    parser.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    add_input_errors_option(parser)


def tokenize_main(args: argparse.Namespace) -> int:
    text = argument_text(args.text, args.errors, "the text") if args.text is not None else read_stdin(args.errors)
    if args.decode and args.tokenizer in ("char", "words"):
        raise LucidError(f"--tokenizer {args.tokenizer} learns its vocabulary from the text, so it cannot decode ids; "
                         f"give a saved tokenizer (e.g. a run folder)")
    tokenizer = load_any_tokenizer(args, text)
    if args.decode:
        try:
            ids = [int(t) for t in text.split()]
        except ValueError:
            raise LucidError("--decode expects whitespace-separated integer ids") from None
        sys.stdout.write(tokenizer.decode(ids))
        return 0
    ids = tokenizer.encode(text, allowed_special="all" if args.allow_special else ())
    if args.ids:
        print(" ".join(map(str, ids)))
    else:
        print(render_tokens(tokenizer, ids, _use_colour(args.color)))
    return 0


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Learn a tokenizer from text: a byte-level BPE (GPT-2's kind, the default) or a WordPiece "
                          "(BERT's kind, for encoders and masked-LM training).")
    parser.add_argument("--data", required=True, nargs="+", help="UTF-8 text file(s) to learn from")
    parser.add_argument("--kind", choices=["bpe", "wordpiece"], default="bpe",
                        help="bpe: merges over bytes; wordpiece: merges over characters, later pieces of a word "
                             "written ##piece (default: bpe)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="tokens in the vocabulary, bytes and specials "
                                                                      "included (default: 4096)")
    parser.add_argument("--out", required=True, help="folder to write (our format, and tokenizer.json; "
                                                     "tokenizer.tiktoken for BPE, vocab.txt for WordPiece)")
    parser.add_argument("--pattern", default="gpt4", choices=sorted(NAMED), help="BPE pre-split pattern (default: gpt4)")
    parser.add_argument("--special", action="append", help="special token to reserve (repeatable; default: "
                                                           "<|endoftext|> for BPE, [PAD] [UNK] [CLS] [SEP] [MASK] "
                                                           "for WordPiece)")
    parser.add_argument("--min-frequency", type=int, default=2,
                        help="WordPiece: never merge a pair seen fewer times (default: 2)")
    parser.add_argument("--score", choices=["frequency", "likelihood"], default="frequency",
                        help="WordPiece: merge the most frequent pair (as tokenizers trains BERT vocabularies) or the "
                             "pair most likely together, count(ab) / (count(a) count(b)) (default: frequency)")
    parser.add_argument("--cased", action="store_true", help="WordPiece: keep case and accents (default: lowercase "
                                                             "and strip accents, as bert-base-uncased)")


def train_main(args: argparse.Namespace) -> int:
    if Path(args.out).exists() and not Path(args.out).is_dir():  # before minutes of training, not after
        raise LucidError(f"{args.out} is a file, not a folder: give --out a folder")
    if args.vocab_size < 1 or args.min_frequency < 1:
        raise LucidError("--vocab-size and --min-frequency must be at least 1")
    texts = []
    for name in args.data:
        try:
            texts.append(Path(name).read_text(encoding="utf-8"))
        except OSError as exc:
            raise LucidError(f"cannot read {name}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise LucidError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    if not any(t for t in texts):
        raise LucidError("the training text is empty")
    out = Path(args.out)
    start = time.perf_counter()
    if args.kind == "wordpiece":
        specials = args.special or list(WORDPIECE_SPECIALS)
        tokenizer = WordPieceTokenizer.train(texts, args.vocab_size, lowercase=not args.cased, special_tokens=specials,
                                             min_frequency=args.min_frequency, score=args.score, progress=True)
        seconds = time.perf_counter() - start
        tokenizer.save(out)
        written, made = "lucidlm-tokenizer.json, vocab.txt, tokenizer.json", f"{tokenizer.vocab_size} pieces"
    else:
        specials = args.special or ["<|endoftext|>"]
        tokenizer = Tokenizer.train(texts, args.vocab_size, pattern=args.pattern, special_tokens=specials,
                                    progress=True, eos_token=specials[0])
        seconds = time.perf_counter() - start
        tokenizer.save(out)
        tokenizer.save_hf(out / "tokenizer.json")
        tokenizer.save_tiktoken(out / "tokenizer.tiktoken")
        written = "lucidlm-tokenizer.json, lucidlm-tokenizer.vocab, tokenizer.json, tokenizer.tiktoken"
        made = f"{tokenizer.vocab_size} tokens ({len(tokenizer.merges)} merges)"
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(tokenizer.encode_ordinary(t)) for t in texts)
    print(f"trained {made} in {seconds:.1f} s; {n_bytes / max(n_tokens, 1):.2f} bytes per token on the training text")
    print(f"wrote {out}/ ({written})")
    return 0
