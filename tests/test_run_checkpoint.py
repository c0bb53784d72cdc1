"""engine/run_checkpoint.py: what --resume continues from, decided before anything of the run is changed.

Run folders are laid out by hand here (the files a run writes, with tiny checkpoints); tests/test_bad_input.py
runs the same cases through train.py on a real run, tests/test_run_folders.py kills real runs."""
from __future__ import annotations

import pytest
import torch

from engine import run_checkpoint as ckpt
from engine.run_folder import RunFolderError


def _run_folder(path, *, finished, last=True, best=True, progress=True):
    """A run folder with ``finished`` epochs as train.py leaves it (checkpoints reduced to a few bytes)."""
    (path / "tbd" / "runs").mkdir(parents=True)
    (path / "args.json").write_text("{}\n")
    (path / "log.txt").write_text("epoch lines\n")
    if best:
        torch.save({"module.w": torch.zeros(1)}, path / ckpt.BEST_NAME)
    if last:
        torch.save({"format_version": ckpt.FORMAT_VERSION, "epoch": finished - 1, "log_length": 12},
                   path / ckpt.LAST_NAME)
    if progress:
        ckpt.write_progress(path, epochs_finished=finished)
    return path


def _contents(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_resume_continues_from_last_pt(tmp_path):
    run = _run_folder(tmp_path, finished=3)
    assert ckpt.resume_state(run)["epoch"] == 2


def test_a_run_whose_first_epoch_never_finished_starts_over(tmp_path):
    # killed between best_model.pt and the first last.pt: progress.json still says 0 epochs
    assert ckpt.resume_state(_run_folder(tmp_path / "a", finished=0, last=False)) is None
    # a run of an older version (no progress.json) that never got to a checkpoint
    assert ckpt.resume_state(_run_folder(tmp_path / "b", finished=0, last=False, best=False, progress=False)) is None


@pytest.mark.parametrize("progress", [True, False], ids=["progress.json", "older run without it"])
def test_a_deleted_last_pt_is_refused_and_nothing_changes(tmp_path, progress):
    run = _run_folder(tmp_path, finished=3, last=False, progress=progress)
    before = _contents(run)
    with pytest.raises(RunFolderError) as caught:
        ckpt.resume_state(run)
    message = str(caught.value)
    assert "\n" not in message and f"{run} holds" in message and "no last.pt" in message, message
    assert ("3 finished epochs" in message) == progress and "best_model.pt" in message, message
    assert "another --logpath" in message and "move the folder away" in message, message
    assert _contents(run) == before


def test_a_truncated_or_foreign_last_pt_is_named(tmp_path):
    run = _run_folder(tmp_path, finished=2)
    data = (run / ckpt.LAST_NAME).read_bytes()
    (run / ckpt.LAST_NAME).write_bytes(data[: len(data) // 2])
    before = _contents(run)
    with pytest.raises(RunFolderError, match=r"--resume: cannot read .*last\.pt \(RuntimeError: .*\); nothing was "
                                             r"changed"):
        ckpt.resume_state(run)
    torch.save({"format_version": 99}, run / ckpt.LAST_NAME)
    with pytest.raises(RunFolderError, match="not a last.pt of this version"):
        ckpt.resume_state(run)
    assert _contents(run).keys() == before.keys()
