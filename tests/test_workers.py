"""common.workers: a $TMPDIR too long for the DataLoader workers' UNIX socket is one clear error, not a hang."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHECK = "from common.workers import check_worker_tempdir; check_worker_tempdir({nworker}); print('fits')"


def long_tempdir(base: Path) -> Path:
    """A folder under ``base`` whose path is 90 characters or more (a socket path holds at most 107)."""
    path = base / ("x" * max(1, 90 - len(str(base)) - 1))
    path.mkdir()
    return path


def _check(nworker: int, tempdir: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tempdir), PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", CHECK.format(nworker=nworker)], env=env, capture_output=True,
                          text=True, timeout=120)


def skip_unless_too_long(tempdir: Path, nworker: int = 1) -> subprocess.CompletedProcess:
    """The check with ``nworker`` workers under ``tempdir``; skips where this Python's multiprocessing puts its
    sockets in a shorter folder by itself (newer versions fall back to one): no hang to turn into an error."""
    checked = _check(nworker, tempdir)
    if checked.returncode == 0:
        pytest.skip(f"this Python opens DataLoader worker sockets under a {len(str(tempdir))}-character TMPDIR")
    return checked


def test_a_long_tmpdir_is_refused_before_any_worker_starts(tmp_path):
    tempdir = long_tempdir(tmp_path)
    refused = skip_unless_too_long(tempdir, nworker=2)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("common.workers.WorkerTempDirError: --nworker 2:"), last
    assert str(tempdir) in last and f"({len(str(tempdir))} characters;" in last and "TMPDIR=/tmp" in last
    assert _check(0, tempdir).stdout.strip() == "fits"  # no workers, no socket


def test_a_short_tmpdir_fits(tmp_path):
    short = Path("/tmp") if len(str(tmp_path)) > 60 else tmp_path
    assert _check(2, short).stdout.strip() == "fits"
