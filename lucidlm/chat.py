"""`lucidlm chat`: a multi-turn conversation in the terminal, streamed token by token.

The conversation is a list of messages rendered by the model's chat template each turn. A
PromptCache keeps the KV cache of everything said so far, so a turn only computes its new tokens.
Ctrl-C stops an answer (the session goes on); Ctrl-D or /exit ends the session. With stdin not a
terminal, every line is a turn and the answers go to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

from .errors import LucidError
from .files import add_input_errors_option, argument_text, decode_text, write_atomic
from .generation import GenerationSettings, PromptCache, stream_generate
from .generation.text import check_generates
from .options import add_generation_options, add_model_options, load_from_args, settings_from_args

HELP = """commands:
  /help                 this list
  /reset                forget the conversation (keeps the system message)
  /system TEXT          set the system message
  /retry                sample the last answer again
  /undo                 remove the last question and its answer
  /save FILE            write the conversation as JSON
  /load FILE            read a conversation written by /save
  /set NAME VALUE       change a setting: temp, top_k, top_p, min_p, repetition_penalty,
                        presence_penalty, frequency_penalty, max_tokens, seed
  /settings             show the settings
  /stats                cached tokens, what the last turn computed, speeds
  /exit                 end the session (Ctrl-D works too)
Ctrl-C stops the current answer."""

# What /set can change, and how to read its value; "temp" is short for temperature.
SETTINGS = {"temperature": float, "top_k": int, "top_p": float, "min_p": float, "repetition_penalty": float,
            "presence_penalty": float, "frequency_penalty": float, "max_tokens": int, "seed": int}
ALIASES = {"temp": "temperature"}
# The chat's defaults: some variety, a mild repetition penalty, room for a long answer.
CHAT_DEFAULTS = GenerationSettings(temperature=0.7, top_p=0.9, repetition_penalty=1.1, max_tokens=512)


class ChatSession:
    """The conversation, its settings and its KV cache; independent of the terminal."""

    def __init__(self, model, tokenizer, system: str | None = None, settings: GenerationSettings = CHAT_DEFAULTS,
                 **changes) -> None:
        """changes: GenerationSettings fields (or "temp") that override `settings`."""
        if tokenizer is None:
            raise LucidError("this model has no tokenizer, so it cannot chat")
        check_generates(model)
        self.model, self.tokenizer = model, tokenizer
        self.system = system
        self.messages: list[dict[str, str]] = []
        self.settings = settings.replace(**{ALIASES.get(k, k): v for k, v in changes.items()})
        self.cache = PromptCache(model)
        self._reseed()
        self.last: dict[str, Any] = {}
        self.dropped = 0  # old messages left out because the conversation outgrew the context

    # --- settings ------------------------------------------------------------------------------

    def _reseed(self) -> None:
        # One generator for the whole session: each turn continues the same random stream.
        self.generator = self.settings.generator()

    def set(self, name: str, value: str) -> None:
        name = name.replace("-", "_")
        name = ALIASES.get(name, name)
        if name not in SETTINGS:
            raise LucidError(f"unknown setting {name!r} (known: temp, {', '.join(SETTINGS)})")
        try:
            parsed = SETTINGS[name](value)
        except ValueError:
            raise LucidError(f"{name} needs a {SETTINGS[name].__name__}, got {value!r}") from None
        self.settings = self.settings.replace(**{name: parsed})
        if name == "seed":
            self._reseed()

    def shown_settings(self) -> str:
        return ", ".join(f"{name}={getattr(self.settings, name)}" for name in SETTINGS)

    # --- the conversation ----------------------------------------------------------------------

    def conversation(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.messages

    def reply(self, user_text: str | None, write: Callable[[str], None]) -> str:
        """Answer user_text (None: answer the conversation as it stands, for /retry), streaming
        through write(). Ctrl-C stops the answer; what was said so far is kept."""
        if user_text is not None:
            if not user_text.strip():
                raise LucidError("empty message")
            self.messages.append({"role": "user", "content": user_text})
        pieces: list[str] = []
        response, ids = None, []
        start = time.perf_counter()
        interrupted = False
        try:
            ids = self._prompt_that_fits()
            for response in stream_generate(self.model, self.tokenizer, ids, settings=self.settings,
                                            prompt_cache=self.cache, generator=self.generator):
                pieces.append(response.text)
                write(response.text)
        except KeyboardInterrupt:  # stop this answer, keep what was said
            interrupted = True
        except LucidError:
            if user_text is not None:
                self.messages.pop()
            raise
        answer = "".join(pieces)
        self.messages.append({"role": "assistant", "content": answer})
        self.last = {
            "prompt_tokens": len(ids), "prefilled": self.cache.last_prefill, "reused": self.cache.reused,
            "generated": response.generation_tokens if response else 0,
            "prompt_tps": response.prompt_tps if response else 0.0,
            "generation_tps": response.generation_tps if response else 0.0,
            "finish": "interrupted" if interrupted else (response.finish_reason if response else None),
            "seconds": time.perf_counter() - start,
        }
        return answer

    def _prompt_that_fits(self) -> list[int]:
        """The rendered conversation, dropping the oldest exchanges while it leaves no room for
        an answer in the model's context (the system message always stays)."""
        context = self.model.config.context_length
        room = min(self.settings.max_tokens, context // 4)
        while True:
            ids = self.tokenizer.apply_chat_template(self.conversation(), add_generation_prompt=True)
            if len(ids) + room <= context or self.model.config.all_layers_slide:
                return ids
            if len(self.messages) <= 1:
                raise LucidError(f"the message is too long: {len(ids)} tokens, the model's context is {context}")
            removed = 2 if self.messages[1]["role"] == "assistant" else 1
            del self.messages[:removed]
            self.dropped += removed

    def retry(self, write: Callable[[str], None]) -> str:
        if not self.messages or self.messages[-1]["role"] != "assistant":
            raise LucidError("nothing to retry yet")
        self.messages.pop()
        return self.reply(None, write)

    def undo(self) -> None:
        if not self.messages:
            raise LucidError("nothing to undo")
        if self.messages[-1]["role"] == "assistant":
            self.messages.pop()
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()

    def reset(self) -> None:
        self.messages = []
        self.cache.reset()

    def save(self, path: str) -> None:
        data = {"system": self.system, "messages": self.messages, "settings": self.settings.to_dict()}
        try:
            write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False))
        except OSError as exc:
            raise LucidError(f"cannot write {path}: {exc.strerror}") from None

    def load(self, path: str) -> None:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise LucidError(f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nesting too deep
            raise LucidError(f"{path} is not a saved conversation (invalid JSON: {exc})") from None
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
                for m in messages):
            raise LucidError(f"{path} is not a saved conversation (no valid 'messages' list)")
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise LucidError(f"{path}: 'system' must be a string")
        self.system, self.messages = system, messages

    def stats(self) -> str:
        lines = [f"cached tokens: {len(self.cache.tokens)} (context {self.model.config.context_length})",
                 f"messages: {len(self.messages)}" + (f" ({self.dropped} older ones dropped to fit the context)"
                                                      if self.dropped else "")]
        if self.last:
            l = self.last
            lines.append(f"last turn: prompt {l['prompt_tokens']} tokens, prefilled {l['prefilled']} new "
                         f"({l['reused']} reused from the cache) at {l['prompt_tps']:.1f} tok/s; "
                         f"generated {l['generated']} at {l['generation_tps']:.1f} tok/s ({l['finish']})")
        return "\n".join(lines)


class Repl:
    """Reads lines, runs commands, streams answers."""

    def __init__(self, session: ChatSession, out: TextIO | None = None, interactive: bool | None = None,
                 errors: str = "strict") -> None:
        self.session = session
        self.out = out if out is not None else sys.stdout  # looked up now: tests and tools replace sys.stdout
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self.errors = errors  # input lines that are not UTF-8: an error for that line, or replaced bytes

    def read_line(self) -> str:
        """One input line, decoded as UTF-8 (EOFError at the end of the input)."""
        if self.interactive:
            try:
                line = input("> ")
            except UnicodeDecodeError as exc:  # where the terminal's encoding reads strictly
                raise LucidError(f"that line is not UTF-8: byte 0x{exc.object[exc.start]:02X} "
                                 f"at offset {exc.start}") from None
            return argument_text(line, self.errors, "that line")
        raw = sys.stdin.buffer.readline()
        if not raw:
            raise EOFError
        return decode_text(raw, self.errors, "that line of standard input")

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def say(self, text: str) -> None:
        self.write(text + "\n")

    def handle(self, line: str) -> bool:
        """One input line; returns False when the session should end."""
        s = self.session
        if not line.startswith("/"):
            s.reply(line, self.write)
            self.write("\n" if s.last.get("finish") != "interrupted" else "\n[stopped]\n")
            return True
        command, _, rest = line[1:].partition(" ")
        rest = rest.strip()
        if command in ("exit", "quit"):
            return False
        if command == "help":
            self.say(HELP)
        elif command == "reset":
            s.reset()
            self.say("[conversation cleared]")
        elif command == "system":
            s.system = rest or None
            self.say(f"[system message {'set' if rest else 'cleared'}]")
        elif command == "retry":
            s.retry(self.write)
            self.write("\n")
        elif command == "undo":
            s.undo()
            self.say("[removed the last exchange]")
        elif command == "save":
            if not rest:
                raise LucidError("usage: /save FILE")
            s.save(rest)
            self.say(f"[saved {len(s.messages)} messages to {rest}]")
        elif command == "load":
            if not rest:
                raise LucidError("usage: /load FILE")
            s.load(rest)
            self.say(f"[loaded {len(s.messages)} messages from {rest}]")
        elif command == "set":
            name, _, value = rest.partition(" ")
            if not value.strip():
                raise LucidError("usage: /set NAME VALUE")
            s.set(name, value.strip())
            self.say(f"[{name} = {value.strip()}]")
        elif command == "settings":
            self.say(s.shown_settings())
        elif command == "stats":
            self.say(s.stats())
        else:
            raise LucidError(f"unknown command /{command} (try /help)")
        return True

    def run(self) -> int:
        if self.interactive:
            _enable_line_editing()
            self.say("lucidlm chat. Type /help for commands, Ctrl-D to quit.")
        while True:
            try:
                line = self.read_line()
            except EOFError:
                if self.interactive:
                    self.write("\n")
                return 0
            except KeyboardInterrupt:
                self.write("\n(Ctrl-D or /exit to quit)\n")
                continue
            except LucidError as exc:  # a line that is not UTF-8: say so, keep the session
                self.say(f"error: {exc}")
                continue
            line = line.strip()
            if not line:
                continue
            try:
                if not self.handle(line):
                    return 0
            except LucidError as exc:
                self.say(f"error: {exc}")
            except KeyboardInterrupt:  # during a command: abandon it, keep the session
                self.write("\n[stopped]\n")


def _enable_line_editing() -> None:
    """readline gives arrow-key editing and a history kept across sessions."""
    try:
        import atexit
        import readline
    except ImportError:  # Windows without pyreadline: plain input still works
        return
    history = Path.home() / ".lucidlm_history"
    try:
        readline.read_history_file(history)
    except (OSError, ValueError):
        pass
    readline.set_history_length(1000)
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline, path: Path) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--system", "-s", help="system message")
    add_input_errors_option(parser)
    add_model_options(parser)
    add_generation_options(parser, CHAT_DEFAULTS, exclude=("overflow",))


def main(args: argparse.Namespace) -> int:
    settings = settings_from_args(args, CHAT_DEFAULTS)
    system = argument_text(args.system, args.errors, "--system") if args.system is not None else None
    model, tokenizer = load_from_args(args)
    return Repl(ChatSession(model, tokenizer, system=system, settings=settings), errors=args.errors).run()
