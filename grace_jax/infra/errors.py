"""The exception classes every layer raises for an error its user can fix (standard library only).

A `UserError` names the file, flag or config field and what to do; `grace_jax.infra.cli` turns it into
one line on stderr and exit status `exit_code`, with no traceback. The subclasses that are also
`FileNotFoundError` / `ValueError` keep `except` clauses written against the standard types working.
The model, the optimizer and the data readers import this module, never the CLI module.
"""

from __future__ import annotations

__all__ = ["ConfigError", "NotFoundError", "UsageError", "UserError"]


class UserError(Exception):
    """An error the user can fix; the message says which file, flag or config field and what to do."""

    exit_code = 1


class UsageError(UserError):
    """The command line itself is wrong (exit status 2, as argparse and absl use for usage errors)."""

    exit_code = 2


class NotFoundError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist, or is not what the command needs."""


class ConfigError(UserError, ValueError):
    """A config field (or flag) has a value that cannot work; the message names the field."""
