"""Checkpoints of a training run: ``best_model.pt`` (released format) and ``last.pt`` (everything to resume).

``best_model.pt`` is what the released ``train.py`` saved: the state dict of the ``nn.DataParallel``-wrapped
model, i.e. every key prefixed with ``module.``. Ours is built from the *unwrapped* model and prefixed, so the
released ``test.py`` loads it and :func:`model.checkpoint.load_model_state` loads both. With
``--slim-checkpoints`` it is slim instead (:func:`model.checkpoint.slim_state_dict`: no frozen backbone).

``last.pt`` (written every epoch, format 2) holds what training changes: the model's tensors without the
frozen backbone and the record of that backbone (name, ``--backbone-weights``, SHA-256 of its tensors: a
resumed run's backbone must hash the same), the optimizer (and AMP scaler) state, the epoch just finished, the
best validation mIoU so far, the RNG states (Python, NumPy, torch CPU, CUDA) and the resolved arguments --
only tensors, numbers, strings and containers, so it loads with ``weights_only=True``. Format 1 (the whole
model's state) still resumes. Both files are written atomically (:mod:`common.io`).

``progress.json`` (a few bytes: ``{"epochs_finished": N}``, written when a run starts and after every
``last.pt``) outlives ``last.pt``: users delete a checkpoint to save space. :func:`resume_state` reads it to
tell a run whose first epoch never finished (``--resume`` starts it over) from one whose ``last.pt`` is gone
(``--resume`` is refused and nothing of the run is changed).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from common.errors import brief
from common.io import atomic_torch_save, atomic_write_text
from engine.run_folder import RunFolderError, describe_run
from model.checkpoint import released_state_dict, slim_state_dict

BEST_NAME = "best_model.pt"
LAST_NAME = "last.pt"
PROGRESS_NAME = "progress.json"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: the whole model's state under "model"


def save_best(model: torch.nn.Module, run_dir: Path, *, slim_backbone: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``run_dir/best_model.pt``: the released format, or slim (no backbone tensors) when
    ``slim_backbone`` (:func:`model.checkpoint.backbone_record`) is given."""
    state = released_state_dict(model) if slim_backbone is None else slim_state_dict(model, slim_backbone)
    return atomic_torch_save(state, run_dir / BEST_NAME)


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states in a ``weights_only``-loadable form."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when GPUs are visible)."""
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(list(state["cuda"])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


def save_last(run_dir: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
              best_miou: float, args: Mapping[str, Any], backbone: Mapping[str, Any], scaler: Optional[Any] = None,
              log_length: int = 0, extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``run_dir/last.pt`` after ``epoch`` (0-based) finished; ``backbone`` is the frozen backbone's record
    (:func:`model.checkpoint.backbone_record`), whose tensors are left out; ``log_length`` is the size of the
    run's log at that point (a resumed run cuts the log back to it)."""
    state = {
        "format_version": FORMAT_VERSION,
        **slim_state_dict(model, backbone),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": int(epoch),
        "best_miou": float(best_miou),
        "rng": rng_state(),
        "args": {key: value for key, value in args.items()},
        "log_length": int(log_length),
        "extra": dict(extra or {}),
    }
    path = atomic_torch_save(state, run_dir / LAST_NAME)
    write_progress(run_dir, epochs_finished=epoch + 1)
    return path


def write_progress(run_dir: Path, *, epochs_finished: int) -> Path:
    """Write ``run_dir/progress.json``: how many epochs of the run have finished (0 when it starts)."""
    return atomic_write_text(json.dumps({"epochs_finished": int(epochs_finished)}) + "\n", run_dir / PROGRESS_NAME)


def epochs_finished(run_dir: Path) -> Optional[int]:
    """The finished epochs ``progress.json`` records; None without a readable record (runs of older versions)."""
    try:
        return int(json.loads((run_dir / PROGRESS_NAME).read_text())["epochs_finished"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


_KEEP_OR_MOVE = ("nothing was changed: restore last.pt, or start a new run with another --logpath, or move the "
                 "folder away and run the command without --resume to start over")


def load_last(run_dir: Path) -> dict[str, Any]:
    """Read ``run_dir/last.pt`` on the CPU.

    Raises:
        RunFolderError: it is missing, unreadable (truncated, damaged) or of an unknown format; one line naming it.
    """
    path = run_dir / LAST_NAME
    if not path.is_file():
        raise RunFolderError(f"--resume: no {LAST_NAME} in {run_dir} (was the run started with this --logpath?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, I/O error: all mean "cannot resume"
        raise RunFolderError(f"--resume: cannot read {path} ({brief(exc)}); {_KEEP_OR_MOVE}") from exc
    if not isinstance(state, dict) or state.get("format_version") not in READABLE_VERSIONS:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise RunFolderError(f"--resume: {path} is not a last.pt of this version (format {version!r}); "
                             f"{_KEEP_OR_MOVE}")
    return state


def resume_state(run_dir: Path) -> Optional[dict[str, Any]]:
    """What ``--resume`` continues ``run_dir`` from: ``last.pt``'s state, or None when the run has no finished
    epoch (its first epoch never finished: the run starts over).

    Raises:
        RunFolderError: ``last.pt`` is unreadable, or missing although epochs finished (``progress.json``; for
            runs of older versions without it: ``best_model.pt`` is there); nothing in ``run_dir`` is changed.
    """
    if (run_dir / LAST_NAME).is_file():
        return load_last(run_dir)
    finished = epochs_finished(run_dir)
    if finished == 0 or (finished is None and not (run_dir / BEST_NAME).exists()):
        return None
    epochs = f"{finished} finished epoch{'s' if finished != 1 else ''}" if finished else "finished epochs"
    raise RunFolderError(f"--resume: {run_dir} holds {epochs} ({describe_run(run_dir)}) but no {LAST_NAME} to "
                         f"continue from; {_KEEP_OR_MOVE}")
