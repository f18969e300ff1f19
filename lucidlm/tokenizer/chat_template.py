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

import functools
import json
import operator
import re
import sys
import time
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from ..errors import LucidError

RENDER_SECONDS = 2.0  # a real template renders a conversation in milliseconds
MAX_OUTPUT = 4_000_000  # characters of rendered text, and of any string, list or size made inside it

# The generic fallback for models without a template of their own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_HIDE_OPEN, _HIDE_CLOSE = "\ue000", "\ue001"  # private-use characters around a hidden special string


class TemplateError(LucidError):
    pass


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with every way to make a huge value in one step checked before it runs (one C
    call, such as "a" * 10**10 or 3 ** 10**7, cannot be interrupted by the time limit): repetition,
    concatenation (+ and ~), powers and products of integers, %-formatting and str.format widths,
    and any size argument of a call or a filter (center, indent, ljust, ...)."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])

    def call_binop(self, context, op: str, left: Any, right: Any) -> Any:
        if op == "*" and _is_int(left) and _is_int(right):
            _check(left.bit_length() + right.bit_length() <= MAX_BITS, f"the product {left!r} * {right!r}")
        elif op == "*":
            count, sequence = (left, right) if _is_int(left) else (right, left)
            if _is_int(count) and isinstance(sequence, (str, list, tuple)):
                _check(len(sequence) * count <= MAX_OUTPUT, f"a repeated value of {len(sequence) * count:,} items")
        elif op == "**" and _is_int(left) and _is_int(right) and right > 0:
            _check(left.bit_length() * right <= MAX_BITS, f"the power {left!r} ** {right!r}")
        elif op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
            _check(len(left) + len(right) <= MAX_OUTPUT, f"a value of {len(left) + len(right):,} items")
        elif op == "%" and isinstance(left, str):
            _check_widths(left)
        return BINOPS[op](left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own signature)
        _check_arguments(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any):  # str.format and format_map, as the sandbox hands them out
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None

        def checked(*args, **kwargs):
            _check_widths(value.__self__)
            return wrapped(*args, **kwargs)
        return checked


BINOPS = {"*": operator.mul, "**": operator.pow, "+": operator.add, "%": operator.mod}
MAX_BITS = 1_000_000  # an integer of a million bits already has 300,000 digits


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise TemplateError(f"chat template: {what} is too large")


def _check_arguments(args, kwargs) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check(abs(value) <= MAX_OUTPUT, f"a size of {value!r}")


def _check_widths(text: str) -> None:
    """A format string's widths and precisions ('%9999999999d', '{:>9999999999}') are its numbers."""
    for number in re.findall(r"\d+", text):
        _check(len(number) <= 7 and int(number) <= MAX_OUTPUT, f"a format width of {number}")


def _bounded_filter(function):
    @functools.wraps(function)  # keeps jinja2's pass_context / pass_environment marks
    def bounded(*args, **kwargs):
        _check_arguments(args[1:], kwargs)  # the first is the value filtered (or the context)
        if function.__name__ in ("do_format", "format") and args and isinstance(args[0], str):
            _check_widths(args[0])
        return function(*args, **kwargs)
    return bounded


def _bounded_join(parts) -> str:
    """The compiled template's `~` (jinja2 joins its operands with str_join)."""
    texts = [str(p) for p in parts]
    _check(sum(map(len, texts)) <= MAX_OUTPUT, "a joined value")
    return "".join(texts)


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


def _collect(chunks) -> str:
    """The rendered text, stopped as soon as it grows past MAX_OUTPUT characters."""
    out, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateError(f"chat template: the rendered text grew past {MAX_OUTPUT:,} characters")
        out.append(chunk)
    return "".join(out)


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
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        template = env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template has a syntax error on line {exc.lineno}: {exc.message}") from None
    template.root_render_func.__globals__["str_join"] = _bounded_join  # this template's own namespace
    return template


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
        rendered = _within(RENDER_SECONDS, lambda: _collect(template.generate(**variables)))
    except SecurityError as exc:
        raise TemplateError(f"chat template tried something the sandbox forbids: {exc}") from None
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("chat template failed: it recurses without end") from None
    except Exception as exc:  # a template is a program from a file: whatever it raises is its fault
        raise TemplateError(f"chat template failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                            ) from None

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
