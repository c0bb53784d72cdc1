"""benchmarks/gpu_session.sh in its dry mode: every step of the prepared GPU call, on the CPU at tiny sizes, so
that the script cannot rot while no GPU is around (issue 23)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture
def short_tmpdir():
    """A scratch $TMPDIR with a short path: the steps' DataLoader workers open a UNIX socket under it
    (common.workers), and a pytest folder under a long user name or an xdist worker's folder can be too long."""
    base = tempfile.gettempdir()
    path = Path(tempfile.mkdtemp(prefix="gs.", dir=base if len(base) <= 40 else "/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_dry_run_runs_every_step_and_returns_what_the_device_tool_can_carry(tmp_path, short_tmpdir):
    out = tmp_path / "out"
    env = dict(os.environ, GPU_SESSION_DRY="1", OUT=str(out), PYTHON=sys.executable, TMPDIR=str(short_tmpdir))
    for name in ("GPU_SESSION_DRY_RELEASED", "GPU_SESSION_BUDGET", "GPU_SESSION_LIMIT_SCALE"):
        env.pop(name, None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_session.sh")], env=env, capture_output=True,
                          text=True, timeout=1800)  # the dry run's own budget (1200 s) stops it first
    log = (out / "session.log").read_text() if (out / "session.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + log[-4000:]

    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()[1:]]
    status = {row[0]: row[1] for row in rows}
    assert list(status) == ["train_test_resnet50", "micro_bsz", "train_test_vgg16", "profile", "compile", "cuda_tests", "cam",
                            "memory", "e2e"]
    assert all(value == "0" for name, value in status.items() if name != "compile"), status

    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    kinds = {(r["bench"], r.get("variant")) for r in results}
    assert {("train_test", "fp32"), ("train_test", "ckpt"), ("train_test", "amp"), ("memory", None),
            ("cam", None), ("e2e", None), ("profile", None)} <= kinds
    assert all("skipped" in r for r in results if r.get("variant") in ("amp", "amp-bf16"))  # CUDA only
    micro = {r["variant"] for r in results if r["bench"] == "train_test" and r["bsz"] == 4}
    assert {"fp32", "fp32/micro2", "ratio_fp32/micro2", "ckpt/micro2"} <= micro, micro
    assert [r for r in results if r["bench"] == "e2e"][0]["table"]
    # the CAM files of ours against the released procedure's on the same pairs (both fp32 on the CPU)
    cam = [r for r in results if r["bench"] == "cam" and r.get("side") == "both"][0]
    assert cam["compared_pairs"] == 4 and cam["max_abs_diff"] < 1e-3, cam

    # the profile: one training step's time by operator group and the top operators (bf16: CUDA only)
    profiles = {r["precision"]: r for r in results if r["bench"] == "profile"}
    assert "skipped" in profiles["bf16"] and profiles["fp32"]["total_ms"] > 0
    rows = [line.split("\t") for line in (out / "profile.tsv").read_text().splitlines() if not line.startswith("#")]
    assert rows[0] == ["precision", "kind", "name", "ms", "share", "calls"]
    groups = {row[2]: float(row[4]) for row in rows if row[1] == "group"}
    assert {"convolution forward", "convolution backward", "backbone", "correlation (bmm)", "copies",
            "group norm", "elementwise", "interpolation", "optimizer"} <= set(groups), groups
    assert abs(sum(groups.values()) - 1) < 0.01
    assert len([row for row in rows if row[1] == "kernel"]) == 30

    # what the device tool brings back: at most 8 files, no deeper than 2 folders, plain names
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)
    assert not list(short_tmpdir.glob("gpu_session.*"))  # its scratch folder is removed
