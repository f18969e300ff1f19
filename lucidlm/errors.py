"""The one exception type a user sees.

Every mistake a user can make (a missing file, a corrupt header, a bad flag value) raises LucidError
with a one-line message that names the problem; the CLI prints it without a traceback.
"""

import dataclasses
from contextlib import contextmanager
from typing import Iterator


class LucidError(Exception):
    """A user-facing error: the message is complete and fits on one line."""


class ConfigError(LucidError, ValueError):
    """A Config field (or a value read into one) is invalid; the message names the field."""


class SettingError(ConfigError):
    """One setting of a settings object is invalid: `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class FormatError(LucidError, ValueError):
    """A file is missing, truncated, corrupt or of a kind lucidlm does not support."""


def check_known_fields(cls, data: dict, what: str) -> None:
    """Refuse keys that are not fields of the dataclass cls, naming them all (a typo in a config
    file must not be silently ignored)."""
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"{what} {', '.join(unknown)}")


# What Python raises when code meets data of the wrong shape: a string where a number belongs,
# a missing key, a list nested ten thousand deep, a number too large for a float.
MALFORMED = (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError, OverflowError)


@contextmanager
def reading(origin: object, what: str = "file") -> Iterator[None]:
    """While interpreting a file's contents, any error the contents cause is the file's: one
    FormatError that names it (lucidlm's own errors pass through as they are)."""
    try:
        yield
    except LucidError:
        raise
    except MALFORMED as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        # from exc: `lucidlm --debug` shows where it happened, in case the fault is ours after all
        why = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise FormatError(f"{origin}: malformed {what} ({why})") from exc
