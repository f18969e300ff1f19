"""Chat templates: the Jinja template shipped with a model, rendered in a sandbox.

The environment matches what transformers gives templates (trim_blocks, lstrip_blocks, loop
controls, `tojson`, `raise_exception`, `strftime_now`, the special-token strings), so the rendered
text is the same. It is jinja2's ImmutableSandboxedEnvironment: a template cannot reach Python
internals. Special-token strings typed inside a message are hidden while rendering and come back
as plain text, so only the template itself can produce special tokens. A template is a program
from a file, so its rendering is bounded: RENDER_SECONDS of time, MAX_OUTPUT characters (repeated
strings and lists included), and any error it raises is one TemplateError.
"""

from __future__ import annotations

import json
import operator
import sys
import time
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import LucidError

RENDER_SECONDS = 2.0  # a real template renders a conversation in milliseconds
MAX_OUTPUT = 4_000_000  # characters of rendered text (and of any repeated string or list inside it)

# The generic fallback for models without a template of their own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_HIDE_OPEN, _HIDE_CLOSE = "\ue000", "\ue001"  # private-use characters around a hidden special string


class TemplateError(LucidError):
    pass


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with `*` and `**` checked before they run: "a" * 10**10 would exhaust memory
    in one C call that no time limit can interrupt."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, op: str, left: Any, right: Any) -> Any:
        if op == "*":
            count, sequence = (left, right) if isinstance(left, int) else (right, left)
            if isinstance(sequence, (str, list, tuple)) and isinstance(count, int) and \
                    len(sequence) * count > MAX_OUTPUT:
                raise TemplateError(f"chat template: a repeated value of {len(sequence) * count:,} items is too large")
            return operator.mul(left, right)
        if isinstance(right, (int, float)) and abs(right) > 1000:
            raise TemplateError(f"chat template: the power {left!r} ** {right!r} is too large")
        return operator.pow(left, right)


def _within(seconds: float, render):
    """Run render() with a deadline: a trace function checks the clock on every line the
    template's compiled code runs (nested loops cannot run away), and stops it with a TemplateError."""
    deadline = time.monotonic() + seconds

    def tracer(frame, event, arg):
        if time.monotonic() > deadline:
            raise TemplateError(f"chat template: rendering took longer than {seconds:g} s")
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return render()
    finally:
        sys.settrace(previous)


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template has a syntax error on line {exc.lineno}: {exc.message}") from None


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list):
        raise LucidError("messages must be a list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise LucidError(f"message {i} must be a dict with a string 'role'")
        if not isinstance(m.get("content", ""), (str, type(None))):
            raise LucidError(f"message {i}: only string contents are supported")


def render_chat(tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                **kwargs: Any) -> list[tuple[str, bool]]:
    """Render `messages`; returns [(text, is_special_token)] chunks in order. Joined, the texts
    are the rendered string; the special chunks are the template's own special tokens."""
    _check_messages(messages)
    specials = list(tokenizer.special_tokens)
    hidden: list[str] = []

    def hide(text: str) -> str:
        if not specials or not isinstance(text, str):
            return text
        out = []
        for chunk, special in tokenizer.split_special(text, specials):
            if special:
                hidden.append(chunk)
                chunk = f"{_HIDE_OPEN}{len(hidden) - 1}{_HIDE_CLOSE}"
            out.append(chunk)
        return "".join(out)

    safe = [{**m, "content": hide(m.get("content"))} for m in messages]
    context = {name: getattr(tokenizer, name, None) or "" for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
    template = compile_template(tokenizer.chat_template or CHATML_TEMPLATE)
    variables = {**context, **kwargs, "messages": safe, "add_generation_prompt": add_generation_prompt}
    try:
        rendered = _within(RENDER_SECONDS, lambda: template.render(**variables))
    except SecurityError as exc:
        raise TemplateError(f"chat template tried something the sandbox forbids: {exc}") from None
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("chat template failed: it recurses without end") from None
    except Exception as exc:  # a template is a program from a file: whatever it raises is its fault
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                            ) from None
    if len(rendered) > MAX_OUTPUT:
        raise TemplateError(f"chat template: the rendered text has {len(rendered):,} characters (at most {MAX_OUTPUT:,})")

    def unhide(text: str) -> str:
        if not hidden:
            return text
        out, pos = [], 0
        while (start := text.find(_HIDE_OPEN, pos)) >= 0:
            end = text.find(_HIDE_CLOSE, start)
            number = text[start + 1:end]
            if end < 0 or not number.isdigit() or int(number) >= len(hidden):
                break
            out.append(text[pos:start] + hidden[int(number)])
            pos = end + 1
        return "".join(out) + text[pos:]

    chunks = tokenizer.split_special(rendered, specials) if specials else [(rendered, False)]
    return [(chunk if special else unhide(chunk), special) for chunk, special in chunks]
