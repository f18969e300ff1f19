"""`lucidlm attention`, `lucidlm next`, `lucidlm lens` and `lucidlm embeddings`: the views from the
command line, as text tables in the terminal, PNG files or the explorer page."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import LucidError
from ..files import add_input_errors_option, text_or_stdin
from ..generation import GenerationSettings
from ..options import add_generation_options, add_model_options, load_from_args, settings_from_args
from .attention import attention
from .explorer import check_page_size
from .tokens import text_ids
from .embeddings import embeddings_2d
from .figures import save_figure
from .lens import logit_lens
from .next_token import next_token


def _add_text(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="the text to look at (default: read standard input)")
    add_input_errors_option(parser)
    add_model_options(parser)


def _text(args: argparse.Namespace) -> str:
    text = text_or_stdin(args.text, args.errors, "the text as an argument")
    if not text:
        raise LucidError("the text is empty")
    return text


def _save(fig, path: str) -> None:
    print(f"wrote {save_figure(fig, path)}")


def _continuing_model(args: argparse.Namespace):
    """A model that continues a text: next and lens read a decoder's next-token guesses."""
    model, tokenizer = load_from_args(args)
    if model.config.is_encoder_decoder:
        raise LucidError("this model is an encoder-decoder: it writes a target for a source, so there is no next "
                         "token of the text to look at (try lucidlm translate, or lucidlm attention --cross)")
    return model, tokenizer


def _layers(text: str | None) -> list[int] | str | None:
    if text is None or text == "all":
        return "all" if text == "all" else None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise LucidError(f"--layers takes 'all' or layer numbers like 3,5 (got {text!r})") from None


# --- attention -------------------------------------------------------------------------------------

def add_attention_arguments(parser: argparse.ArgumentParser) -> None:
    _add_text(parser)
    parser.add_argument("--layer", type=int, help="the layer to print (default: the last)")
    parser.add_argument("--head", type=int, help="the head to print (default: the mean of all heads)")
    parser.add_argument("--layers", help="layers to keep for --png and --html: 'all' (default) or e.g. 3,5")
    parser.add_argument("--png", metavar="FOLDER", help="write one heatmap per layer and a model view there")
    parser.add_argument("--html", metavar="FILE", help="write the explorer: one self-contained HTML page")
    parser.add_argument("--width", type=int, help="columns of the table (default: the terminal's)")
    parser.add_argument("--cross", action="store_true",
                        help="an encoder-decoder's cross-attention while it translates the text (rows: the "
                             "tokens it wrote, columns: the source's); without it, an encoder-decoder shows its "
                             "encoder's self-attention")


def attention_main(args: argparse.Namespace) -> int:
    text = _text(args)
    model, tokenizer = load_from_args(args)
    pictures = args.png or args.html
    chosen = _layers(args.layers) or ("all" if pictures else None)
    config = model.config
    depth = config.encoder_layers if config.is_encoder_decoder and not args.cross else config.n_layers  # what is shown
    layer = args.layer if args.layer is not None else chosen[0] if isinstance(chosen, list) else depth - 1
    chosen = chosen or [layer]
    if args.html and not model.config.is_encoder_decoder:  # before the forward: the sizes alone tell
        check_page_size(model.config.n_layers if chosen == "all" else len(chosen), model.config.n_heads,
                        len(text_ids(model, tokenizer, text)))
    view = attention(model, tokenizer, text, chosen, cross=args.cross)
    if not pictures or args.layer is not None or args.head is not None:
        print(view.table(layer, args.head, args.width))
    if args.png:
        for path in view.save_pngs(args.png):
            print(f"wrote {path}")
    if args.html:
        print(f"wrote {view.html(args.html)}")
    return 0


# --- next token ------------------------------------------------------------------------------------

NEXT_DEFAULTS = GenerationSettings(temperature=1.0)
NOT_SAMPLING = ("repetition_penalty", "presence_penalty", "frequency_penalty", "penalty_window", "logit_bias",
                "max_tokens", "stop", "seed", "overflow")


def add_next_arguments(parser: argparse.ArgumentParser) -> None:
    _add_text(parser)
    parser.add_argument("--top", type=int, default=10, help="how many of the most likely tokens to show (default 10)")
    parser.add_argument("--png", metavar="FILE", help="also draw the probabilities as a bar chart")
    add_generation_options(parser, NEXT_DEFAULTS, exclude=NOT_SAMPLING)


def next_main(args: argparse.Namespace) -> int:
    text = _text(args)
    settings = settings_from_args(args, NEXT_DEFAULTS)
    if args.top < 1:
        raise LucidError(f"--top must be at least 1 (got {args.top})")
    model, tokenizer = _continuing_model(args)
    view = next_token(model, tokenizer, text, args.top, settings)
    print(view.table())
    if args.png:
        _save(view.bar_chart(), args.png)
    return 0


# --- logit lens ------------------------------------------------------------------------------------

def add_lens_arguments(parser: argparse.ArgumentParser) -> None:
    _add_text(parser)
    parser.add_argument("--png", metavar="FILE", help="also draw the rank of the actual next token after each layer")
    parser.add_argument("--positions", type=int, default=8, help="how many of the last positions to print (default 8)")


def lens_main(args: argparse.Namespace) -> int:
    text = _text(args)
    model, tokenizer = _continuing_model(args)
    view = logit_lens(model, tokenizer, text)
    print(view.table(last=max(1, args.positions)))
    if args.png:
        _save(view.heatmap(), args.png)
    return 0


# --- embeddings ------------------------------------------------------------------------------------

def add_embeddings_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser)
    parser.add_argument("--tokens", help="comma-separated tokens or words to plot (default: the most frequent)")
    parser.add_argument("--data", help="with no --tokens: plot the most frequent tokens of this text file")
    parser.add_argument("--count", type=int, default=50, help="how many tokens without --tokens (default 50)")
    parser.add_argument("--png", metavar="FILE", help="draw the plane as a PNG (else: print the coordinates)")


def embeddings_main(args: argparse.Namespace) -> int:
    if args.count < 2:
        raise LucidError(f"--count must be at least 2 (got {args.count})")
    text = None
    if args.data:
        try:
            text = Path(args.data).read_bytes().decode("utf-8")
        except OSError as exc:
            raise LucidError(f"cannot read {args.data}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise LucidError(f"{args.data} is not UTF-8 text (invalid byte at offset {exc.start})") from None
    words = [w for w in args.tokens.split(",") if w] if args.tokens else None
    model, tokenizer = load_from_args(args)
    view = embeddings_2d(model, tokenizer, words, text, args.count)
    if args.png:
        _save(view.scatter(), args.png)
    else:
        print(view.table())
    return 0
