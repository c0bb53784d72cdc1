"""The base of every error that bad input from the user can cause.

A :class:`UserInputError` says what is wrong with a flag, a file, the data or the machine, names it, and says
what to do. Every entry point catches it (:func:`common.cli.run_cli`), prints its message in one or two lines
without a traceback and exits with status 2; any other exception is a bug and keeps its traceback. The
packages subclass it together with the matching built-in type (``DataError(UserInputError, ValueError)``), so
``except ValueError`` keeps working.
"""
from __future__ import annotations

__all__ = ["FlagError", "UserInputError", "brief"]


class UserInputError(Exception):
    """Bad input from the user; the message names the flag or file and what to do."""


class FlagError(UserInputError, ValueError):
    """A flag's value cannot be used (found after parsing, e.g. ``--device cuda`` on a machine without a GPU)."""


def brief(exc: BaseException) -> str:
    """``"Type: first sentence"`` of a library's exception, for messages that must stay on one line (PyTorch's
    unreadable-file errors go on for several sentences)."""
    text = " ".join(str(exc).split())
    end = text.find(". ")
    return f"{type(exc).__name__}: {text[:end] if end > 0 else text}"
