"""Settings dataclasses as command-line flags: one field, one flag, its help text from the field.

A field made with `setting(default, help)` becomes `--field-name` (or the names its metadata gives)
with the field's type; a bool becomes --name/--no-name; a list is given as several values
(`many="+"`) or by repeating the flag (`many="append"`); a dict[int, float] is given as repeated
KEY=VALUE. Every flag's argparse default is None, so `given(args, cls)` returns only what the user
typed, and a file or preset underneath keeps its values.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import field
from typing import Any, Iterable


def setting(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field whose help text is also its flag's `--help` line. metadata may give
    `flags` (the flag names), `many` ("+" or "append") and `metavar`."""
    metadata = {"help": help, **metadata}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _kind(annotation) -> tuple[Any, type]:
    """(container, element type): int | None -> (None, int); list[str] -> (list, str);
    dict[int, float] -> (dict, float)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (list, tuple):
        return list, args[0]
    if origin is dict:
        return dict, args[1]
    if args and origin is not None:  # X | None
        return _kind(args[0]) if len(args) == 1 else (None, args[0])
    return None, annotation


def _key_value(text: str) -> tuple[int, float]:
    key, sep, value = text.partition("=")
    try:
        return int(key), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ID=VALUE, e.g. 50256=-100 (got {text!r})") from None


def flag_names(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))


def add_flags(parser: argparse.ArgumentParser, cls, defaults: Any, title: str,
              exclude: Iterable[str] = ()) -> None:
    """One flag per field of the dataclass `cls`; the help shows the value in `defaults`."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude or "help" not in f.metadata:
            continue
        container, kind = _kind(hints[f.name])
        default = getattr(defaults, f.name)
        text = f.metadata["help"]
        names = flag_names(f)
        options: dict[str, Any] = dict(dest=f.name, default=None)
        if kind is bool and container is None:
            options.update(action=argparse.BooleanOptionalAction,
                           help=f"{text} (default: {'on' if default else 'off'})")
        else:
            shown = "" if default in (None, [], {}, ()) else f" (default: {default})"
            metavar = f.metadata.get("metavar", "ID=VALUE" if container is dict else kind.__name__.upper())
            options.update(type=_key_value if container is dict else kind, help=text + shown, metavar=metavar)
            if container is dict or (container is list and f.metadata.get("many") == "append"):
                options["action"] = "append"
            elif container is list:
                options["nargs"] = "+"
        group.add_argument(*names, **options)


def given(args: argparse.Namespace, cls) -> dict[str, Any]:
    """The fields of `cls` the user set on the command line (dict fields from KEY=VALUE pairs)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = dict(value) if _kind(hints[f.name])[0] is dict else value
    return out


def type_problems(obj: Any) -> list[tuple[str, str]]:
    """(field, what it must be) for every field of a settings dataclass whose value has the wrong
    type, or is not a finite number where a number belongs (a TOML or JSON file can hold anything)."""
    problems = []
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None and type(None) in typing.get_args(hints[f.name]):
            continue
        container, kind = _kind(hints[f.name])
        if container is None:
            ok, what = _is_a(value, kind), kind.__name__
        elif container is list:
            ok = isinstance(value, (list, tuple)) and all(_is_a(v, kind) for v in value)
            what = f"list of {kind.__name__}"
        else:
            ok, what = isinstance(value, dict) and all(_is_a(v, kind) for v in value.values()), "table of numbers"
        if not ok:
            problems.append((f.name, ("finite " if kind is float and container is None else "") + what))
    return problems


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite (10**400, from a TOML file, too
    large for a float, is not one)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _is_a(value: Any, kind: type) -> bool:
    if kind is float:
        return finite_number(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)
