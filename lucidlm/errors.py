"""The one exception type a user sees.

Every mistake a user can make (a missing file, a corrupt header, a bad flag value) raises LucidError
with a one-line message that names the problem; the CLI prints it without a traceback.
"""

import dataclasses


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
