"""What encoders do: sentence embeddings and filling in masked words.

    lucidlm embed --model MINILM "A man is eating food." "A man is eating pasta."   # vectors + cosine table
    lucidlm fill-mask --model BERT "The capital of France is [MASK]."             # top tokens per [MASK]

`fill_mask(model, tokenizer, text)` reads the text whole (special-token strings such as [MASK] are
special here, as in transformers' pipeline) and returns, for every [MASK], the most likely tokens.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from .errors import LucidError
from .files import add_input_errors_option, argument_text
from .options import add_model_options, load_from_args
from .tokenizer.commands import visible_piece


@dataclass
class MaskGuess:
    position: int  # the [MASK]'s index in the token ids
    tokens: list[tuple[str, int, float]]  # (piece, id, probability), most likely first


@torch.no_grad()
def fill_mask(model, tokenizer, text: str, top: int = 5) -> list[MaskGuess]:
    if model.config.head != "mlm":
        raise LucidError("this model has no masked-LM head (a BERT saved as BertForMaskedLM has one)")
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        raise LucidError("this tokenizer has no mask token")
    batch = tokenizer(text, truncation=True, return_tensors="pt")
    ids = batch["input_ids"]
    positions = (ids[0] == mask_id).nonzero().flatten().tolist()
    if not positions:
        raise LucidError(f"the text has no {tokenizer.mask_token}: write it where a word should be guessed")
    logits = model(ids.to(model.device), token_type_ids=batch["token_type_ids"].to(model.device))[0]  # (T, V)
    out = []
    for position in positions:
        probs = logits[position].float().softmax(-1)
        best = torch.topk(probs, min(top, probs.numel()))
        out.append(MaskGuess(position, [(tokenizer.vocab[int(i)], int(i), float(p))
                                        for p, i in zip(best.values, best.indices)]))
    return out


def cosine_table(labels: list[str], vectors: torch.Tensor) -> str:
    """Pairwise cosine similarities of the vectors, as a table with short row labels."""
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    sims = unit @ unit.T
    names = [f"{n + 1}" for n in range(len(labels))]
    lines = [f"{n}. {label}" for n, label in zip(names, labels)] + [""]
    lines.append("cosine " + "".join(f"{n:>7}" for n in names))
    lines += [f"{n:>6} " + "".join(f"{float(s):>7.3f}" for s in row) for n, row in zip(names, sims)]
    return "\n".join(lines)


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="+", help="the texts to embed")
    parser.add_argument("--show", type=int, default=4, help="vector values to print per text (default 4)")
    add_input_errors_option(parser)
    add_model_options(parser)


def embed_main(args: argparse.Namespace) -> int:
    texts = [argument_text(t, args.errors, "a text") for t in args.texts]
    model, tokenizer = load_from_args(args)
    vectors = model.encode(texts, tokenizer=tokenizer)
    pooling = model.config.pooling if model.config.pooling != "none" else "mean"
    print(f"{len(texts)} vectors of {vectors.shape[1]} ({pooling} pooling"
          f"{', L2-normalised' if model.config.normalize_pooled else ''})")
    for text, vector in zip(texts, vectors):
        shown = ", ".join(f"{float(x):.4f}" for x in vector[:max(0, args.show)])
        print(f"  [{shown}{', ...' if vectors.shape[1] > args.show else ''}]  {text[:60]}")
    if len(texts) > 1:
        print("\n" + cosine_table(texts, vectors))
    return 0


def add_fill_mask_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="a text with [MASK] where a word should be guessed")
    parser.add_argument("--top", type=int, default=5, help="guesses per mask (default 5)")
    add_input_errors_option(parser)
    add_model_options(parser)


def fill_mask_main(args: argparse.Namespace) -> int:
    text = argument_text(args.text, args.errors, "the text")
    if args.top < 1:
        raise LucidError(f"--top must be at least 1 (got {args.top})")
    model, tokenizer = load_from_args(args)
    for guess in fill_mask(model, tokenizer, text, args.top):
        print(f"mask at token {guess.position}:")
        for piece, token, probability in guess.tokens:
            print(f"  {visible_piece(piece.encode('utf-8')):<16} {probability:.4f}  (id {token})")
    return 0
