"""DataLoader worker processes need a temporary folder whose path fits a UNIX socket address.

A worker hands each tensor it made to the main process through a UNIX socket that Python's multiprocessing
opens under ``$TMPDIR`` (``<TMPDIR>/pymp-XXXXXXXX/listener-XXXXXXXX``), and a socket path holds at most 107
characters. With a longer ``$TMPDIR`` (cluster job folders often are) the worker's send fails in a background
thread that only prints a traceback; the batch is dropped and the main process waits for it forever. This
module turns that hang into one clear line before any worker starts.
"""
from __future__ import annotations

import tempfile
from multiprocessing.connection import Listener

from common.errors import UserInputError, brief

__all__ = ["WorkerTempDirError", "check_worker_tempdir"]


class WorkerTempDirError(UserInputError, OSError):
    """DataLoader workers cannot pass tensors back from this machine's temporary folder."""


def check_worker_tempdir(nworker: int, flag: str = "--nworker") -> None:
    """Open and close the kind of UNIX socket a DataLoader worker will open (same folder, same naming);
    nothing to check without workers (``nworker`` 0).

    Raises:
        WorkerTempDirError: the socket cannot be made there (its path too long, the folder not writable);
            the message names ``$TMPDIR``, its length and ``flag``.
    """
    if nworker <= 0:
        return
    try:
        Listener(family="AF_UNIX").close()
    except OSError as exc:
        tempdir = tempfile.gettempdir()
        raise WorkerTempDirError(
            f"{flag} {nworker}: DataLoader workers cannot pass tensors back through the temporary folder {tempdir} "
            f"({len(tempdir)} characters; {brief(exc)}): they use a UNIX socket there, whose path may hold at most "
            f"107 characters. Set TMPDIR to a shorter folder (e.g. TMPDIR=/tmp) or pass {flag} 0") from exc
