"""`lucidlm serve`: load a model and serve it over the OpenAI API, with the chat page at /."""

from __future__ import annotations

import argparse
import os
import sys

from ..default_model import DEFAULT_MODEL_FILE
from ..errors import LucidError
from ..options import add_model_options, load_from_args
from .app import Server, ServerOptions, bind

DEFAULTS = ServerOptions()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, "
                          "/v1/embeddings for encoders, /v1/models) with a chat page at /, /health and "
                          "/metrics. Requests are batched as they come; the official openai client works "
                          "unmodified. Fields lucidlm does not implement (tools, response_format with a "
                          "schema, ...) are refused with a 400 that names them.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                            "machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--name", help="the model's id in /v1/models (default: the model file's name; "
                                       "\"default\" is always accepted as well)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on the API "
                                          "(default: $LUCIDLM_API_KEY if set, else no key)")
    parser.add_argument("--max-batch", type=int, default=DEFAULTS.max_batch,
                        help=f"most rows decoded together (default {DEFAULTS.max_batch})")
    parser.add_argument("--max-queue", type=int, default=DEFAULTS.max_queue,
                        help=f"most requests waiting for a row; more get 429 (default {DEFAULTS.max_queue})")
    parser.add_argument("--timeout", type=float, default=DEFAULTS.timeout,
                        help=f"seconds a request may wait and run (default {DEFAULTS.timeout:g})")
    parser.add_argument("--max-body", type=int, default=DEFAULTS.max_body,
                        help=f"largest request body in bytes; more get 413 (default {DEFAULTS.max_body})")
    parser.add_argument("--prompt-cache-tokens", type=int, default=DEFAULTS.prompt_cache_tokens,
                        help="tokens of finished conversations kept so a request with the same start skips "
                             f"them (default {DEFAULTS.prompt_cache_tokens}; 0: off)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let web pages from ORIGIN call the API (repeatable; default: none)")
    add_model_options(parser)


def _options(args: argparse.Namespace, name: str) -> ServerOptions:
    checks = [(1 <= args.port <= 65535, f"--port must be between 1 and 65535 (got {args.port})"),
              (args.max_batch >= 1, f"--max-batch must be at least 1 (got {args.max_batch})"),
              (args.max_queue >= 1, f"--max-queue must be at least 1 (got {args.max_queue})"),
              (args.timeout > 0, f"--timeout must be positive (got {args.timeout:g})"),
              (args.max_body >= 1024, f"--max-body must be at least 1024 bytes (got {args.max_body})"),
              (args.prompt_cache_tokens >= 0, "--prompt-cache-tokens must be 0 or more")]
    for ok, message in checks:
        if not ok:
            raise LucidError(message)
    key = args.api_key if args.api_key is not None else os.environ.get("LUCIDLM_API_KEY")
    if key is not None and not key.strip():
        raise LucidError("--api-key is empty")
    return ServerOptions(name=name, api_key=key, max_batch=args.max_batch, max_queue=args.max_queue,
                         timeout=args.timeout, max_body=args.max_body,
                         prompt_cache_tokens=args.prompt_cache_tokens, cors_origins=tuple(args.cors_origin))


def model_name(path: str | None) -> str:
    name = os.path.basename(os.path.normpath(path)) if path is not None else DEFAULT_MODEL_FILE
    return name[:-5] if name.endswith(".gguf") else name


def serve_main(args: argparse.Namespace) -> int:
    options = _options(args, args.name or model_name(args.model))
    sock = bind(args.host, args.port)
    model, tokenizer = load_from_args(args)
    server = Server(model, tokenizer, options)

    def ready(url: str) -> None:
        print(f"serving {options.name} at {url}/v1 ({server.describe_page(url)})"
              f"{' with an API key' if options.api_key else ''}; Ctrl-C stops", file=sys.stderr, flush=True)

    server.run(sock, ready)
    return 0
