"""The one exception type for user mistakes.

Library code raises `GptlabError` (or a subclass) for anything the user can fix: bad input
files, bad options, mismatched datasets. The message names the problem and the fix in one
line. The CLI prints it as `error: <message>` on stderr and exits non-zero, never with a
traceback. Internal invariants use `assert`; real bugs propagate as ordinary exceptions.
"""


class GptlabError(Exception):
    """A user-facing error: one line that names the bad value and how to fix it."""


class ConfigError(GptlabError, ValueError):
    """An invalid configuration value (also a ValueError, for callers that expect one)."""
