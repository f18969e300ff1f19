"""`lucidlm <verb>`: the command-line dispatcher. Each verb's arguments live with its module.

A LucidError (a user mistake: a bad flag value, a missing or corrupt file) or an error of the
machine (a full disk, a missing folder) is printed as one line and exits with status 2; anything
else is a bug of ours, also one line (exit 1), with the traceback only under --debug.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import LucidError

# verb -> (module, add_arguments, main, one-line help)
VERBS = {
    "chat": ("lucidlm.chat", "add_arguments", "main", "multi-turn chat with a model (default: SmolLM2-135M)"),
    "generate": ("lucidlm.complete", "add_arguments", "main", "one completion of a prompt"),
    "serve": ("lucidlm.serve.command", "add_serve_arguments", "serve_main",
              "serve a model over the OpenAI API, with a chat page that shows token probabilities and attention"),
    "info": ("lucidlm.weights.info", "add_arguments", "main", "describe a model file: architecture, size, tokenizer"),
    "quantize": ("lucidlm.weights.quantize", "add_arguments", "main",
                 "write a GGUF file with quantized matrices (q8_0, q4_0, q4_1) that llama.cpp and lucidlm read"),
    "tokenize": ("lucidlm.tokenizer.commands", "add_tokenize_arguments", "tokenize_main",
                 "show how text becomes tokens (or --ids for scripts)"),
    "tokenizer": (None, None, None, "tokenizer tools: `lucidlm tokenizer train`"),
    "train": ("lucidlm.train.command", "add_train_arguments", "train_main",
              "train a GPT from scratch or fine-tune one (checkpoints, resume, DDP)"),
    "finetune": ("lucidlm.train.finetune_command", "add_finetune_arguments", "finetune_main",
                 "fine-tune a pretrained model on instructions or chats, all weights or LoRA adapters (--lora)"),
    "finetune-classifier": ("lucidlm.train.classifier_command", "add_classifier_arguments", "classifier_main",
                            "turn a pretrained model into a text classifier (labelled JSONL), with baselines"),
    "data": (None, None, None, "data tools: `lucidlm data show`, `lucidlm data pairs`, `lucidlm data instructions`, "
                               "`lucidlm data speakers`"),
    "eval": (None, None, None, "evaluation: `lucidlm eval perplexity` (a text file), `lucidlm eval run` "
                               "(in-context learning tasks: acc, acc_norm, exact match)"),
    "attention": ("lucidlm.look.commands", "add_attention_arguments", "attention_main",
                  "attention weights: a table per head, heatmaps (--png), the explorer page (--html)"),
    "next": ("lucidlm.look.commands", "add_next_arguments", "next_main",
             "next-token probabilities, and what each stage of the sampler removes"),
    "lens": ("lucidlm.look.commands", "add_lens_arguments", "lens_main",
             "logit lens: the best guess for the next token after every layer"),
    "embed": ("lucidlm.encode", "add_embed_arguments", "embed_main",
              "sentence embeddings of texts (an encoder such as all-MiniLM-L6-v2), with their cosine similarities"),
    "fill-mask": ("lucidlm.encode", "add_fill_mask_arguments", "fill_mask_main",
                  "the most likely tokens for each [MASK] in a text (a BERT with its masked-LM head)"),
    "translate": ("lucidlm.translate", "add_translate_arguments", "translate_main",
                  "an encoder-decoder's translations of texts, greedy or by beam search (--pairs: exact match)"),
    "ladder": ("lucidlm.ladder.command", "add_ladder_arguments", "ladder_main",
               "the course's ladder from n-grams to GPT: train every rung on one corpus, table and plot"),
    "embeddings": ("lucidlm.look.commands", "add_embeddings_arguments", "embeddings_main",
                   "token embeddings in a plane (PCA, or the raw plane of a 2-wide model)"),
}
SUBVERBS = {
    ("tokenizer", "train"): ("lucidlm.tokenizer.commands", "add_train_arguments", "train_main",
                             "learn a byte-level BPE from text files"),
    ("data", "show"): ("lucidlm.train.command", "add_show_arguments", "show_main",
                       "show training windows: inputs, shifted targets and masks side by side"),
    ("data", "instructions"): ("lucidlm.train.command", "add_instructions_arguments", "instructions_main",
                               "write a small instruction set (six kinds of one-word answers), train and held out"),
    ("data", "speakers"): ("lucidlm.train.classifier_command", "add_speakers_arguments", "speakers_main",
                           "write a classification set: Shakespeare's speeches labelled by their speaker"),
    ("data", "pairs"): ("lucidlm.train.command", "add_pairs_arguments", "pairs_main",
                        "write a translation task: English number words and their French (source<TAB>target)"),
    ("eval", "perplexity"): ("lucidlm.evaluate.command", "add_perplexity_arguments", "perplexity_main",
                             "a text file's perplexity, nats per token and bits per byte, in rolling windows"),
    ("eval", "run"): ("lucidlm.evaluate.command", "add_run_arguments", "run_main",
                      "zero-, one- and few-shot accuracy on JSONL tasks; --show prints prompts with every choice's score"),
}


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line, like every other error, with where to read more."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add(subparsers, name: str, spec) -> None:
    module_name, add_name, main_name, help_text = spec
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    module = importlib.import_module(module_name)
    getattr(module, add_name)(parser)
    parser.set_defaults(_main=getattr(module, main_name))


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = OneLineParser(prog="lucidlm", description="A readable transformer language-model stack.")
    parser.add_argument("--version", action="version", version=f"lucidlm {importlib.import_module('lucidlm').__version__}")
    parser.add_argument("--debug", action="store_true", help="on an unexpected error, show the Python traceback "
                                                            "(this flag may go anywhere on the line)")
    subparsers = parser.add_subparsers(title="verbs", metavar="VERB")
    # Only the chosen verb's module is imported, so `lucidlm info` does not pay for the trainer.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, spec in VERBS.items():
        if spec[0] is None:
            group = subparsers.add_parser(name, help=spec[3], description=spec[3])
            inner = group.add_subparsers(title="commands", metavar="COMMAND")
            if chosen == name:
                for (outer, sub), subspec in SUBVERBS.items():
                    if outer == name:
                        _add(inner, sub, subspec)
            group.set_defaults(_main=None, _group=group)
        elif chosen == name or chosen is None:
            _add(subparsers, name, spec) if chosen == name else subparsers.add_parser(name, help=spec[3])
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # --debug may go anywhere on the line (it is about how errors are shown), but not after "--"
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    run = getattr(args, "_main", None)
    if run is None:
        (getattr(args, "_group", None) or parser).print_help()
        return 2
    try:
        return run(args) or 0
    except LucidError as exc:
        if debug:
            raise
        print(f"lucidlm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lucidlm tokenize --ids ... | head`
        return 0
    except (OSError, MemoryError) as exc:  # the machine's doing: a full disk, a missing folder, no memory left
        if debug:
            raise
        if isinstance(exc, MemoryError):
            print("lucidlm: error: out of memory", file=sys.stderr)
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"lucidlm: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug of ours, unless the allocator says it ran out: one line either way
        if debug:
            raise
        if type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(exc):  # torch's CUDA and CPU
            print(f"lucidlm: error: out of memory ({str(exc).splitlines()[0][:160]})", file=sys.stderr)
            return 2
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(f"lucidlm: internal error: {type(exc).__name__}{': ' + detail if detail else ''} "
              f"(please report it; run again with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
