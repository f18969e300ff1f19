"""`lucidlm train` and the data tools: `data show` (training windows, or fine-tuning records with
their loss masks), `data pairs` and `data instructions` (tasks written here)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..default_model import default_model_path
from ..errors import LucidError, reading
from ..tokenizer import UNIT_TOKENIZERS, Tokenizer, unit_tokenizer
from ..tokenizer.commands import visible_piece
from .conversations import PROMPT_FORMATS, Renderer, read_records
from .data import Split, Windows, read_corpus, tokenize_corpus
from .instruction_set import KINDS, instruction_records, write_records
from .number_words import MOST_PAIRS, number_pairs, write_pairs
from .run_folder import RunFolder
from .settings import TRAIN_PRESETS, TrainSettings, add_setting_flags, resolve
from .trainer import Trainer


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train a GPT from scratch (--preset, or a [model] table in --config) or fine-tune one "
                          "(--init-from). Checkpoints, metrics.jsonl, loss.png and samples go to --out. "
                          "Launch with torchrun for data-parallel training. Presets: " + ", ".join(TRAIN_PRESETS))
    parser.add_argument("--config", help="TOML file of training settings, with an optional [model] table")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in this folder where it stopped")
    parser.add_argument("--force", action="store_true", help="start over in an --out folder that holds another run")
    add_setting_flags(parser)


def train_main(args: argparse.Namespace, defaults: TrainSettings | None = None) -> int:
    """defaults: the settings a verb starts from (finetune's), below the TOML file and the flags."""
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise LucidError("--resume continues a run in its own folder; leave out --out")
        run = RunFolder(args.resume)
        with reading(run.info_path, "run description"):
            base = TrainSettings.from_dict(run.read()["settings"])
        settings, _, _ = resolve(args, base=base)
        settings.out = args.resume
        trainer = Trainer(settings, None, resume=True)
    else:
        settings, config, explicit_vocab = resolve(args, base=defaults)
        trainer = Trainer(settings, config, force=args.force, explicit_vocab=explicit_vocab)
    try:
        trainer.fit()
    except KeyboardInterrupt:  # the processes of a torchrun run may stop at different steps
        trainer.close(clean=False)
        return 130
    except BaseException:
        trainer.close(clean=False)
        raise
    trainer.close()
    return 0


def add_show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, nargs="+", help="corpus file(s)")
    parser.add_argument("--tokenizer", help="'char' (default), 'ascii', 'bytes', 'words' or a tokenizer folder/file "
                                             "or model (with --chat: the default model's)")
    parser.add_argument("--chat", action="store_true", help="the data is fine-tuning records (JSONL): show each "
                                                            "rendered with its loss mask, token by token")
    parser.add_argument("--prompt-format", default="auto", choices=PROMPT_FORMATS,
                        help="--chat: instruction records as 'chat' (the template), 'alpaca', or 'auto'")
    parser.add_argument("--train-on-prompt", action="store_true", help="--chat: learn the prompts' tokens too")
    parser.add_argument("--window", type=int, default=16, help="tokens per window (default 16)")
    parser.add_argument("--stride", type=int, help="tokens between window starts (default: the window)")
    parser.add_argument("--count", type=int, default=3, help="windows to show (default 3)")
    parser.add_argument("--start", type=int, default=0, help="first window to show")
    parser.add_argument("--doc-separator", help="also split files into documents at this string")


def show_main(args: argparse.Namespace) -> int:
    if args.window < 1 or (args.stride is not None and args.stride < 1) or args.count < 1:
        raise LucidError("--window, --stride and --count must be at least 1")
    paths = [Path(p) for p in args.data]
    for path in paths:
        if not path.is_file():
            raise LucidError(f"{path}: no such file")
    if args.chat:
        return show_records(args, paths)
    args.tokenizer = args.tokenizer or "char"
    if args.tokenizer in UNIT_TOKENIZERS:
        tokenizer = unit_tokenizer(args.tokenizer, "".join(read_corpus(paths, args.doc_separator)))
    else:
        tokenizer = Tokenizer.from_file(args.tokenizer)
    tokens, doc_starts, n_docs = tokenize_corpus(paths, tokenizer, args.doc_separator)
    windows = Windows(Split(tokens, doc_starts), args.window, args.stride or args.window, tokenizer.pad_token_id or 0)
    print(f"{len(tokens):,} tokens in {n_docs} document(s), {len(windows):,} windows of {args.window} "
          f"(stride {args.stride or args.window}). Each target is the next input: the model learns to predict it.")
    show = range(args.start, min(args.start + args.count, len(windows)))
    if not show:
        raise LucidError(f"there are only {len(windows)} windows")
    inputs, targets, mask = windows.get(list(show))
    for row, k in enumerate(show):
        start, end = windows.locate(k)
        print(f"\nwindow {k}: tokens {start}..{start + args.window} "
              f"(padding masked: {int((~mask[row]).sum())})")
        print(f"  input : {visible_piece(tokenizer.decode_bytes(inputs[row][mask[row]].tolist()))}")
        print(f"  target: {visible_piece(tokenizer.decode_bytes(targets[row][mask[row]].tolist()))}")
        print(f"  {'t':>4}  {'input':<16} {'target':<16} mask")
        for t in range(args.window):
            real = bool(mask[row, t])
            shown_in = visible_piece(tokenizer.token_bytes(int(inputs[row, t]))) if real or t == 0 else "·pad·"
            shown_out = visible_piece(tokenizer.token_bytes(int(targets[row, t]))) if real else "·pad·"
            print(f"  {t:>4}  {shown_in:<16.16} {shown_out:<16.16} {int(real)}")
    sys.stdout.flush()
    return 0


LEARNED_OPEN, LEARNED_CLOSE = "⟦", "⟧"  # around the learned text in the rendered view


def show_records(args: argparse.Namespace, paths: list[Path]) -> int:
    """Fine-tuning records as the model sees them: the rendered text with the learned (answer) parts
    marked, then every token with its id and whether the loss counts it."""
    tokenizer = Tokenizer.from_file(args.tokenizer or default_model_path())
    renderer = Renderer(tokenizer, args.prompt_format, args.train_on_prompt)
    records = [(path, record) for path in paths for record in read_records(path)]
    show = records[args.start:args.start + args.count]
    if not show:
        raise LucidError(f"there are only {len(records)} records")
    print(f"{len(records)} record(s); prompts rendered as {renderer.prompt_format}; "
          f"the loss learns the tokens marked 1 (shown {LEARNED_OPEN}like this{LEARNED_CLOSE} in the text)")
    for k, (path, record) in enumerate(show, args.start):
        example = renderer.render(record, f"{path}, line {record['_line']}")
        text, previous = [], False
        for token, learned in zip(example.ids, example.learn):
            if learned != previous:
                text.append(LEARNED_OPEN if learned else LEARNED_CLOSE)
                previous = learned
            text.append(tokenizer.decode_bytes([token]).decode("utf-8", errors="replace"))
        if previous:
            text.append(LEARNED_CLOSE)
        print(f"\nrecord {k} ({path}, line {record['_line']}): {len(example.ids)} tokens, "
              f"{sum(example.learn[1:])} learned")
        print("  " + "".join(text).replace("\n", "\n  "))
        print(f"  {'t':>4}  {'id':>6}  {'token':<20} learn")
        for t, (token, learned) in enumerate(zip(example.ids, example.learn)):
            print(f"  {t:>4}  {token:>6}  {visible_piece(tokenizer.token_bytes(token)):<20.20} {int(learned)}")
    sys.stdout.flush()
    return 0


def add_instructions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the training records (JSONL)")
    parser.add_argument("--test-out", type=Path, required=True, help="the held-out records (JSONL): items no "
                                                                     "training record uses")
    parser.add_argument("--held-out", type=int, default=5, help="held-out questions per kind (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="which items are held out (default 0)")


def instructions_main(args: argparse.Namespace) -> int:
    if args.test_out.resolve() == args.out.resolve():
        raise LucidError("--test-out must be another file than --out")
    if not 1 <= args.held_out <= 20:
        raise LucidError("--held-out must be between 1 and 20 (some kinds have 25 items)")
    train, held = instruction_records(args.held_out, args.seed)
    write_records(args.out, train)
    write_records(args.test_out, held)
    print(f"wrote {len(train)} training records to {args.out} and {len(held)} held-out ones to {args.test_out} "
          f"({len(KINDS)} kinds: {', '.join(KINDS)}), e.g. {train[0]['instruction']!r} → {train[0]['output']!r}")
    return 0


def add_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="the training pairs file (source<TAB>target lines)")
    parser.add_argument("--count", type=int, default=20000, help="training pairs (default 20000)")
    parser.add_argument("--test-out", type=Path, help="also write held-out pairs here: numbers the training file "
                                                      "does not hold")
    parser.add_argument("--test-count", type=int, default=500, help="held-out pairs (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="which numbers are drawn (default 0)")


def pairs_main(args: argparse.Namespace) -> int:
    wanted = args.count + (args.test_count if args.test_out is not None else 0)
    if args.count < 1 or (args.test_out is not None and args.test_count < 1):
        raise LucidError("--count and --test-count must be at least 1")
    if args.test_out is not None and args.test_out.resolve() == args.out.resolve():
        raise LucidError("--test-out must be another file than --out (the held-out pairs would replace the training ones)")
    if wanted > MOST_PAIRS:
        raise LucidError(f"--count and --test-count together must be at most {MOST_PAIRS} (got {wanted})")
    pairs = number_pairs(wanted, args.seed)  # distinct numbers: the held-out ones are never trained on
    write_pairs(args.out, pairs[:args.count])
    print(f"wrote {args.count} pairs to {args.out}, e.g. {pairs[0][1]!r} → {pairs[0][2]!r}")
    if args.test_out is not None:
        write_pairs(args.test_out, pairs[args.count:])
        print(f"wrote {args.test_count} held-out pairs to {args.test_out}")
    return 0
