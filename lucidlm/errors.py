"""The one exception type a user sees.

Every mistake a user can make (a missing file, a corrupt header, a bad flag value) raises LucidError
with a one-line message that names the problem; the CLI prints it without a traceback.
"""


class LucidError(Exception):
    """A user-facing error: the message is complete and fits on one line."""


class ConfigError(LucidError, ValueError):
    """A Config field (or a value read into one) is invalid; the message names the field."""


class FormatError(LucidError, ValueError):
    """A file is missing, truncated, corrupt or of a kind lucidlm does not support."""
