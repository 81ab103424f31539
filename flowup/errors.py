"""flowup's errors, and the one way they become a line for the user.

:class:`UsageError` is a problem found before any work (a bad option, no model, a runtime that
cannot run here); :class:`RunError`, the work itself failing. Both carry a one-line message;
:func:`one_line` turns any exception into one.
"""

from __future__ import annotations

__all__ = ["UsageError", "RunError", "one_line"]


class UsageError(Exception):
    """A problem with the request as a whole, found before any work (exit status 2 in the CLI)."""


class RunError(Exception):
    """The work itself failed (exit status 1 in the CLI); the message is one line for the user."""


def one_line(err: BaseException) -> str:
    """The first line of an exception's message, prefixed with its type unless it speaks for itself."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(err, (UsageError, RunError, FileNotFoundError, ValueError)) and first:
        return first
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
