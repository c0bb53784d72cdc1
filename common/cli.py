"""Pieces shared by every command-line entry point of the repository: the help formatter and the error
boundary (:func:`run_cli`) that turns bad input into one clear message and exit status 2."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from common.errors import UserInputError


EXIT_BAD_INPUT = 2  # what argparse uses for bad flags; every entry point uses it for every UserInputError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help only where it says something: not for ``None`` defaults,
    on/off switches, or help text that already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
            return text
        return super()._get_help_string(action)


EXIT_INTERRUPTED = 130
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with :class:`HelpFormatter`, whose errors are two lines (the error naming
    the flag, and where the flags are listed) instead of the whole usage block; exit status 2 as argparse."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        """Print ``{prog}: error: {message}`` and the ``--help`` hint, exit with status 2."""
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n{self.prog}: the flags: {self.prog} --help\n")


def error_message(exc: BaseException) -> str:
    """The text to show for ``exc``: its message, without the traceback a DataLoader worker wraps it in.

    An exception raised in a DataLoader worker reaches the main process re-created with the message
    ``"Caught X in DataLoader worker ...\\nOriginal Traceback ...\\n<module>.X: <message>"``; the original
    message (which names the file) is what the user needs.
    """
    text = str(exc).strip()
    if _WORKER_TRACEBACK in text:
        name = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        at = text.rfind(name)
        if at >= 0:
            text = text[at + len(name):].strip()
    return text


def run_cli(main: Callable[[], object], prog: str) -> int:
    """Run an entry point's ``main`` and turn bad input into a message and exit status 2.

    * :class:`~common.errors.UserInputError`: ``"{prog}: error: {message}"`` on stderr, status 2 (under
      torchrun prefixed with the rank; an error every rank raised alike is printed by rank 0 only);
    * a peer rank that stopped (under torchrun, a collective fails because another rank exited): one line
      pointing at that rank's message, status 2;
    * Ctrl-C: ``"{prog}: interrupted"`` (with the interrupt's message, if the entry point gave it one, e.g.
      how to continue), status 130;
    * anything else is a bug and keeps its traceback.
    Returns ``main()``'s status when it returns an int (anything else, such as None or a result, counts as 0).
    """
    from common.distributed import current_rank, is_peer_failure, launched_by_torchrun

    rank = current_rank()
    prefix = f"{prog}: [rank {rank}] " if launched_by_torchrun() else f"{prog}: "
    try:
        status = main()
        return int(status) if isinstance(status, int) else 0
    except UserInputError as exc:
        if rank == 0 or not getattr(exc, "raised_on_every_rank", False):
            print(f"{prefix}error: {error_message(exc)}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as exc:
        detail = f": {exc}" if str(exc) else ""  # e.g. how to continue the interrupted run
        print(f"{prefix}interrupted{detail}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - only a peer's exit is handled here; the rest re-raises
        if not is_peer_failure(exc):
            raise
        print(f"{prefix}error: stopped because another rank stopped (its message is above)",
              file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
