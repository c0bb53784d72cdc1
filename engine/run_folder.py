"""Run folders: one run per folder, runs never mixed, nothing lost.

* A new run (``train.py`` or ``test.py`` without ``--resume``) refuses a folder that already holds anything: the
  message offers ``--resume`` or another ``--logpath``.
* ``--resume`` needs a run of the same script in the folder (its ``args.json``, written when it started) and
  the same flags, except those that do not change what is computed: ``--niter``, ``--nworker``, ``--device``,
  ``--slim-checkpoints`` and ``--checkpoint-learner`` (training), ``--nworker``, ``--device`` and
  ``--bootstrap`` (testing); every other difference is named in the error. Training continues from
  ``last.pt``; a run with finished epochs whose ``last.pt`` is gone or unreadable is refused before anything
  is changed (:func:`engine.run_checkpoint.resume_state`). What a resumed test run keeps is
  :mod:`engine.sweep`'s business.
* ``--logpath`` must be a folder that can be created and written into (checked before any work); a file is
  reported as such.
* A resumed run first undoes what the interrupted one wrote after its last checkpoint: ``log.txt`` is cut
  back to its length at that checkpoint (the cut lines are appended to ``log.interrupted.txt``), stray
  temporary files of interrupted atomic writes are removed, and TensorBoard drops the events of the
  epochs being redone (``purge_step``, see :class:`common.logger.TensorBoardWriter`; when the first epoch
  never finished, the events folder is removed and the run starts over).
* A run that stops on bad input before its first checkpoint removes the folder it created, so the same
  command can be run again once the input is fixed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from common.distributed import DistInfo, check_on_main
from common.errors import UserInputError
from common.io import check_not_a_file, prepare_output_folder
from common.logger import EVENTS_DIR, setup_logging
from engine.args import flag_name

ARGS_NAME = "args.json"
LOG_NAME = "log.txt"
INTERRUPTED_LOG_NAME = "log.interrupted.txt"
# Flags a resumed run may change: they change how fast or where it runs, not what it computes.
# --checkpoint-learner: the same gradients with less memory, for a GPU the run outgrew
RESUME_MAY_CHANGE = ("niter", "nworker", "device", "slim_checkpoints", "checkpoint_learner", "micro_bsz")
TEST_RESUME_MAY_CHANGE = ("nworker", "device", "bootstrap")  # --bootstrap: intervals are recomputed for all cells
# --logpath names the folder itself; command holds --resume; cam_manifests (what the CAM folders hold) is
# compared with a warning
_NOT_COMPARED = ("resume", "logpath", "command", "cam_manifests")
# Left out (None), the run decides it when it starts (engine.training.decide_seed): a resumed run then continues
# with its own, so leaving it out is no difference
_DECIDED_WHEN_LEFT_OUT = ("seed",)


class RunFolderError(UserInputError, FileExistsError):
    """The run folder cannot be used as asked (taken by another run, no run to resume, other flags)."""


@dataclass(frozen=True)
class RunFolder:
    """A run's folder and whether this process created it (and may remove it again on bad input)."""

    path: Path
    created: bool


def flag_differences(stored: Mapping[str, Any], args: argparse.Namespace,
                     may_change: tuple[str, ...] = RESUME_MAY_CHANGE) -> list[str]:
    """``"--lr 0.0004 -> 0.001"`` for every flag (other than ``may_change``) whose value differs from the run's
    ``args.json``; values are compared as JSON, flags missing on either side are skipped, and so is a left-out
    ``--seed`` (the run's own continues)."""
    current = json.loads(json.dumps(vars(args), default=str))
    return [f"{flag_name(key)} {stored[key]!r} -> {current[key]!r}" for key in sorted(stored)
            if key in current and key not in _NOT_COMPARED + may_change and stored[key] != current[key]
            and not (key in _DECIDED_WHEN_LEFT_OUT and current[key] is None)]


def stored_args(path: Path) -> dict[str, Any]:
    """The arguments the run in ``path`` started with (its ``args.json``).

    Raises:
        RunFolderError: no ``args.json`` in ``path``, or it cannot be read.
    """
    args_file = path / ARGS_NAME
    if not args_file.is_file():
        raise RunFolderError(f"--resume: no run in {path} (no {ARGS_NAME}); start it without --resume")
    try:
        return json.loads(args_file.read_text())
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"--resume: cannot read {args_file} ({exc})") from exc


def _check_resumable(path: Path, args: argparse.Namespace, training: bool = True) -> None:
    """Only checks: the run in ``path`` is one of this script's, started with these flags."""
    stored = stored_args(path)
    if training == ("nshots" in stored):  # only test.py records --nshot
        held, wanted = ("a test", "train.py") if training else ("a training", "test.py")
        raise RunFolderError(f"--resume: {path} holds {held} run, which {wanted} cannot continue; choose the "
                             "run's own script, or another --logpath")
    may_change = RESUME_MAY_CHANGE if training else TEST_RESUME_MAY_CHANGE
    differences = flag_differences(stored, args, may_change)
    if differences:
        raise RunFolderError(f"--resume: {path} was started with other flags: {'; '.join(differences)}. Only "
                             f"{', '.join(flag_name(k) for k in may_change)} may change; "
                             "run with the run's flags, or start a new run with another --logpath")


def open_run_folder(path: Path, args: argparse.Namespace, info: DistInfo, *, training: bool) -> RunFolder:
    """Check ``path`` against the policy above (on rank 0; every rank stops alike) and create it.

    Raises:
        RunFolderError: a new run into a used folder, ``--resume`` without a run or with other flags.
        common.io.OutputFolderError: ``path`` is a file, or cannot be created or written into.
    """
    resume = getattr(args, "resume", False)
    existed = path.exists()

    def check() -> None:
        check_not_a_file(path, "--logpath")
        if resume:
            _check_resumable(path, args, training)
        elif path.is_dir() and any(path.iterdir()):
            raise RunFolderError(f"{path} already holds a run; continue it with --resume, or choose another --logpath")
        prepare_output_folder(path, "--logpath")

    check_on_main(check)
    return RunFolder(path=path, created=not existed)


def resumed_args_name(path: Path, resume: bool) -> str:
    """Where a run part records its arguments: ``args.json`` when it starts the run, else the first free
    ``args_resume_N.json`` (the run's own ``args.json`` is what ``--resume`` compares with)."""
    if not resume:
        return ARGS_NAME
    number = 1
    while (path / f"args_resume_{number}.json").exists():
        number += 1
    return f"args_resume_{number}.json"


def roll_back(path: Path, log_length: int, *, no_checkpoint: bool = False) -> None:
    """Undo what an interrupted run wrote after its last checkpoint: cut ``log.txt`` back to ``log_length``
    bytes (the cut part is appended to ``log.interrupted.txt``) and remove stray ``.*.tmp`` files. With
    ``no_checkpoint`` (the first epoch never finished) the TensorBoard events are removed: the run starts over,
    and every one of them belongs to an epoch that is done again."""
    log = path / LOG_NAME
    if log.is_file() and log.stat().st_size > log_length:
        with open(log, "rb") as handle:
            handle.seek(log_length)
            tail = handle.read()
        with open(path / INTERRUPTED_LOG_NAME, "ab") as handle:
            handle.write(tail)
        with open(log, "r+b") as handle:
            handle.truncate(log_length)
    for stray in path.glob(".*.tmp"):
        stray.unlink(missing_ok=True)
    if no_checkpoint:
        shutil.rmtree(path / EVENTS_DIR, ignore_errors=True)


def describe_run(path: Path) -> str:
    """What a run folder holds, for messages: ``"best_model.pt, TensorBoard events, log.txt"``."""
    names = sorted(entry.name for entry in path.iterdir() if not entry.name.startswith(".")) if path.is_dir() else []
    return ", ".join("TensorBoard events" if name == EVENTS_DIR else name for name in names) or "nothing"


def log_length(path: Path) -> int:
    """The current size of the run's ``log.txt`` (0 when absent), recorded with each checkpoint."""
    log = path / LOG_NAME
    return log.stat().st_size if log.is_file() else 0


@contextlib.contextmanager
def removed_on_bad_input(run: RunFolder, info: DistInfo, finished: Optional[str] = None) -> Iterator[None]:
    """Remove ``run``'s folder when bad input stops the run before it wrote ``finished`` (a checkpoint or
    result file name), if this process created the folder; the message still reaches the user."""
    try:
        yield
    except UserInputError:
        unfinished = finished is None or not (run.path / finished).exists()
        if run.created and unfinished and info.is_main:
            setup_logging(None, rank=info.rank)  # close log.txt (console only) before the folder goes
            shutil.rmtree(run.path, ignore_errors=True)
        raise
