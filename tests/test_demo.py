"""``make demo``'s pieces, end to end at a tiny size: the real scripts run in order and write what the README names.

This guards the demo against silent rot (a renamed flag, a moved output); whether the demo *learns* within
its time budget is a property of its full-size settings, measured and recorded in the README, not here.
"""
from __future__ import annotations

import json

import pytest
import torch

from engine import demo
from model import clip_gradcam as cg
from tests.data_helpers import TINY_CLIP


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_its_outputs(tmp_path, capsys):
    clip = tmp_path / "tiny_clip.pt"
    torch.save(cg.random_clip_state_dict(0, **TINY_CLIP), clip)
    out = tmp_path / "demo_out"
    argv = ["--out", str(out), "--clip-weights", str(clip), "--images-per-class", "6", "--img-size", "64",
            "--niter", "1", "--bsz", "4", "--nepisodes", "10", "--val-episodes", "10", "--nworker", "0"]

    assert demo.run(argv) == 0

    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for model in ("untrained", "trained"):
        for shot in ("1shot", "5shot"):
            numbers = results[model][shot]
            assert set(numbers) == {"miou", "fbiou"}
            assert 0.0 <= numbers["miou"] <= 100.0 and 0.0 <= numbers["fbiou"] <= 100.0
    assert results["random_weights"] == {"clip": False, "backbone": True}
    assert "backbone has RANDOM weights" in printed
    assert "1-shot mIoU gain from training" in printed
    assert (out / "qualitative.png").stat().st_size > 0
    assert (out / "train" / "best_model.pt").is_file() and (out / "train" / "last.pt").is_file()
    assert list((out / "train" / "tbd").rglob("events.out.tfevents.*"))
    assert len(list((out / "data" / "CAM_Val").glob("*.pt"))) > 0


@pytest.mark.slow
def test_demo_failure_names_the_step_and_its_log(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "demo_out"), "--clip-weights", str(tmp_path / "missing.pt"),
            "--images-per-class", "6", "--nworker", "0"]

    assert demo.run(argv) == 2

    err = capsys.readouterr().err
    assert "CLIP Grad-CAM priors" in err and "generate_cam_voc.log" in err and "missing.pt" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cams_made_for_other_data_or_clip_weights_are_cleared(tmp_path):
    data_root = tmp_path / "data"
    cam_dirs = (data_root / "CAM_Train", data_root / "CAM_Val")
    for cam_dir in cam_dirs:
        cam_dir.mkdir(parents=True)
        (cam_dir / "2007_000001--0.pt").write_bytes(b"old")
    (data_root / "synthetic.json").write_text(json.dumps({"seed": 0, "max_distractors": 0}))
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"weights A")
    made_for = demo.cam_provenance(data_root, str(clip))

    demo.clear_stale_cams(data_root, cam_dirs, made_for)  # no record: the files' origin is unknown
    assert not any(cam_dir.exists() for cam_dir in cam_dirs)

    cam_dirs[0].mkdir()
    (cam_dirs[0] / "2007_000001--0.pt").write_bytes(b"new")
    (data_root / demo.CAM_PROVENANCE).write_text(made_for)
    demo.clear_stale_cams(data_root, cam_dirs, made_for)  # same data and weights: an interrupted job resumes
    assert (cam_dirs[0] / "2007_000001--0.pt").read_bytes() == b"new"

    clip.write_bytes(b"weights B")
    demo.clear_stale_cams(data_root, cam_dirs, demo.cam_provenance(data_root, str(clip)))
    assert not cam_dirs[0].exists()
