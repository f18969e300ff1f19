"""`lucidlm generate`: one completion, streamed to stdout; the prompt comes from --prompt or stdin.

--chat wraps the prompt in the model's chat template; --show-probs prints, for every generated
token, the five most likely next tokens and their probabilities.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

import torch

from .errors import LucidError
from .files import add_input_errors_option, argument_text, text_or_stdin
from .flags import finite_number
from .generation import GenerationSettings, PromptCache, stream_generate
from .generation.beam import beam_search
from .generation.text import check_generates, prompt_ids
from .model import probe
from .options import add_generation_options, add_model_options, load_from_args, settings_from_args
from .tokenizer.commands import visible_piece


# `generate` is greedy by default and, when the context fills up, keeps its newer half and goes on.
GENERATE_DEFAULTS = GenerationSettings(max_tokens=256, overflow="shift")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", "-p", help="the prompt (default: read standard input)")
    parser.add_argument("--chat", action="store_true", help="apply the model's chat template to the prompt")
    parser.add_argument("--system", help="system message (with --chat)")
    parser.add_argument("--show-probs", action="store_true", help="print the top-5 next-token probabilities per step")
    parser.add_argument("--show-attention", action="store_true",
                        help="print, for each generated token, the prompt tokens attended to most when it was chosen")
    parser.add_argument("--verbose", "-v", action="store_true", help="print token counts and speeds at the end")
    parser.add_argument("--num-beams", type=int, default=1,
                        help="beam search with this many beams: the most probable continuation, printed whole "
                             "(default 1: the sampler)")
    parser.add_argument("--length-penalty", type=float, default=1.0,
                        help="beam search: a finished continuation scores log-probability / length ** this")
    add_input_errors_option(parser)
    add_model_options(parser)
    add_generation_options(parser, GENERATE_DEFAULTS)


def probability_row(tokenizer, step: int, token: int, logprobs: torch.Tensor) -> str:
    probs = logprobs.exp()
    top = torch.topk(probs, 5)
    chosen = f"{visible_piece(tokenizer.token_bytes(token)):<14.14} {float(probs[token]):6.3f}"
    others = " | ".join(f"{visible_piece(tokenizer.token_bytes(int(i))):<10.10} {float(p):5.3f}"
                        for p, i in zip(top.values, top.indices))
    return f"{step:>4}  {chosen}   {others}"


def attention_row(tokenizer, step: int, token: int, record, prompt: list[int], cache: PromptCache,
                  top: int = 3) -> str:
    """The prompt tokens the last query attended to most when this token was chosen: the weights
    of the forward that produced its logits, averaged over every layer and head."""
    choice = f"{step:>4}  {visible_piece(tokenizer.token_bytes(token)):<14.14}   "
    if cache.cache.evicted or cache.tokens[:len(prompt)] != prompt:  # shifted or slid: slots are not the prompt
        return choice + "(the prompt has left the context)"
    weights = torch.stack([w[0, :, -1, :len(prompt)] for w in record.attention.values()]).float()  # (L, H, S)
    mean = weights.mean(dim=(0, 1))  # (S,)
    best = torch.topk(mean, min(top, mean.numel()))
    return choice + "  ".join(f"{visible_piece(tokenizer.token_bytes(prompt[int(i)]))[:12]} {float(w):.2f}"
                              for w, i in zip(best.values, best.indices))


def beam_main(args: argparse.Namespace, model, tokenizer, ids: list[int], settings: GenerationSettings) -> int:
    """generate --num-beams: the best of the beams, printed when the search ends."""
    if args.num_beams < 1 or not finite_number(args.length_penalty):
        raise LucidError("--num-beams must be at least 1 and --length-penalty a finite number")
    if args.show_probs or args.show_attention:
        raise LucidError("--show-probs and --show-attention follow one sampled path: they do not mix with --num-beams")
    check_generates(model)
    eos = tokenizer.eos_token_ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())
    best = beam_search(model, ids, args.num_beams, settings.max_tokens, sorted(eos), args.length_penalty)[0]
    print(tokenizer.decode([t for t in best.tokens if t not in eos]))
    if args.verbose:
        print(f"[{len(ids)} prompt tokens; {len(best.tokens)} generated; score {best.score:.4f}]", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    prompt = text_or_stdin(args.prompt, args.errors, "a prompt with --prompt")
    system = argument_text(args.system, args.errors, "--system") if args.system is not None else None
    if not prompt.strip():
        raise LucidError("the prompt is empty")
    settings = settings_from_args(args, GENERATE_DEFAULTS)
    model, tokenizer = load_from_args(args)
    if tokenizer is None:
        raise LucidError("this model has no tokenizer, so it cannot take a text prompt")
    if args.chat:
        messages = ([{"role": "system", "content": system}] if system else []) + \
                   [{"role": "user", "content": prompt.strip()}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    elif args.system:
        raise LucidError("--system needs --chat")

    ids = prompt_ids(tokenizer, prompt)
    if args.num_beams != 1:
        return beam_main(args, model, tokenizer, ids, settings)
    rows = args.show_probs or args.show_attention  # one line per token instead of the text as it streams
    if args.show_probs:
        print(f"{'step':>4}  {'chosen':<14} {'p':>6}   top 5 next tokens")
    if args.show_attention:
        print(f"{'step':>4}  {'chosen':<14}   the prompt tokens it was chosen looking at most (all layers and heads)")
    response, pieces = None, []
    cache = PromptCache(model)
    watching = probe(model, attention="all", last_query=True) if args.show_attention else nullcontext()
    with watching as recorded:
        for step, response in enumerate(stream_generate(model, tokenizer, ids, settings=settings,
                                                        prompt_cache=cache), 1):
            if args.show_probs:
                print(probability_row(tokenizer, step, response.token, response.logprobs), flush=True)
            if args.show_attention:
                print(attention_row(tokenizer, step, response.token, recorded.last, ids, cache), flush=True)
                recorded.records.clear()  # only the forward that chose the next token is needed
            if rows:
                pieces.append(response.text)
            else:
                print(response.text, end="", flush=True)
    print("\n" + "".join(pieces) if rows else "")
    if args.verbose and response is not None:
        print(f"[{response.prompt_tokens} prompt tokens, {response.prompt_tps:.1f} tok/s; "
              f"{response.generation_tokens} generated, {response.generation_tps:.1f} tok/s; "
              f"finish: {response.finish_reason}]", file=sys.stderr)
    return 0
