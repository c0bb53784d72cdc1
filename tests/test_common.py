"""Tests for the lead's shared helpers: atomic writes, device resolution, seeding."""
from __future__ import annotations

import os
import resource

import numpy as np
import pytest
import torch

from common.device import resolve_device
from common.errors import UserInputError
from common.io import OutputWriteError, atomic_torch_save, atomic_write_bytes, atomic_write_text
from common.seed import fix_randseed


def test_atomic_write_creates_parents_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "b" / "file.txt"
    atomic_write_text("hello", target)
    assert target.read_text() == "hello"
    assert sorted(os.listdir(target.parent)) == ["file.txt"]


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    atomic_write_bytes(b"old", target)

    def broken_replace(src, dst):
        raise KeyboardInterrupt  # as if the job were killed between write and rename

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(b"new", target)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["file.bin"]


def test_a_refused_write_names_the_file_and_keeps_the_old_one(tmp_path):
    """A real refusal from the kernel: a file-size limit (``ulimit -f``) stands in for a full disk (CPython
    ignores SIGXFSZ, so the write fails with EFBIG as it would with ENOSPC)."""
    target = tmp_path / "best_model.pt"
    atomic_write_bytes(b"old", target)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))
    try:
        with pytest.raises(OutputWriteError) as caught:
            atomic_write_bytes(bytes(1 << 20), target)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert isinstance(caught.value, UserInputError) and isinstance(caught.value, OSError)
    message = str(caught.value)
    assert str(target) in message and "File too large" in message and "MB free in" in message, message
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["best_model.pt"]


def test_a_refused_tensorboard_write_names_the_events_folder(tmp_path):
    from common.logger import TensorBoardWriter

    writer = TensorBoardWriter(tmp_path / "run")
    scalars = {"loss": 1.0, "miou": 0.0, "fb_iou": 0.0}
    writer.log_epoch(0, scalars, scalars)  # imports and event files made before the limit holds
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16, hard))  # the event files are already longer
    try:
        with pytest.raises(OutputWriteError, match="File too large") as caught:
            writer.log_epoch(1, scalars, scalars)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert str(writer.logdir) in str(caught.value)


def test_atomic_torch_save_roundtrip(tmp_path):
    tensor = torch.arange(6, dtype=torch.float32).view(2, 3)
    path = atomic_torch_save({"x": tensor}, tmp_path / "t.pt")
    assert torch.equal(torch.load(path, map_location="cpu")["x"], tensor)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="--device"):
        resolve_device("not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda")


def test_fix_randseed_is_reproducible():
    fix_randseed(3)
    first = (np.random.rand(), torch.rand(1).item())
    fix_randseed(3)
    assert (np.random.rand(), torch.rand(1).item()) == first
    assert isinstance(fix_randseed(None), int)



def test_sha256_file_streams_the_file(tmp_path):
    import hashlib

    from common.io import sha256_file

    data = os.urandom(3 << 20)  # several 1 MiB blocks
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_of_any_new_file(tmp_path, umask, mode):
    """mkstemp made every checkpoint, CAM and results file 0600 whatever the umask: a lab-mate could not read
    a shared run. Now the umask decides, as for ``open()``."""
    previous = os.umask(umask)
    try:
        with open(tmp_path / "ordinary.txt", "w") as handle:
            handle.write("x")
        written = [atomic_write_text("x", tmp_path / "a.txt"), atomic_write_bytes(b"x", tmp_path / "b.bin"),
                   atomic_torch_save(torch.zeros(1), tmp_path / "c.pt")]
        atomic_write_text("y", tmp_path / "a.txt")  # replacing a file: the same
    finally:
        os.umask(previous)
    assert oct(os.stat(tmp_path / "ordinary.txt").st_mode & 0o777) == oct(mode)
    for path in written:
        assert oct(os.stat(path).st_mode & 0o777) == oct(mode), path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.pt", "ordinary.txt"]


def test_prepare_output_folder_names_the_flag(tmp_path):
    from common.io import OutputFolderError, prepare_output_folder

    assert prepare_output_folder(tmp_path / "new" / "run", "--logpath") is True
    assert (tmp_path / "new" / "run").is_dir() and not any((tmp_path / "new" / "run").iterdir())
    assert prepare_output_folder(tmp_path / "new" / "run", "--logpath") is False  # an existing folder is fine
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(OutputFolderError, match=r"^--out .*notes.txt is a file, not a folder"):
        prepare_output_folder(tmp_path / "notes.txt", "--out")
    with pytest.raises(OutputFolderError, match=r"^--out .*notes.txt/run: .*notes.txt is a file, not a folder"):
        prepare_output_folder(tmp_path / "notes.txt" / "run", "--out")
    if os.path.isdir("/proc"):  # a folder nobody can make a folder in
        with pytest.raises(OutputFolderError, match=r"^ROOT /proc/x: cannot create the folder"):
            prepare_output_folder("/proc/x", "ROOT")
    assert (tmp_path / "notes.txt").read_text() == "not a folder"
