"""``make demo``'s pieces, end to end at a tiny size: the real scripts run in order and write what the README names.

This guards the demo against silent rot (a renamed flag, a moved output); whether the demo *learns* within
its time budget is a property of its full-size settings, measured and recorded in the README, not here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data import synthetic
from data.dataset import build_dataset
from apps import demo, pretrain
from apps.support_swap import WrongSupportEpisodes
from model.backbone import build_backbone
from priors.recipes import clip_gradcam as cg
from tests.data_helpers import TINY_CLIP


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_its_outputs(tmp_path, capsys):
    clip = tmp_path / "tiny_clip.pt"
    torch.save(cg.random_clip_state_dict(0, **TINY_CLIP), clip)
    out = tmp_path / "demo_out"
    argv = ["--out", str(out), "--clip-weights", str(clip), "--images-per-class", "6", "--img-size", "32",
            "--pretrain-epochs", "1", "--pretrain-images-per-class", "2", "--niter", "1", "--bsz", "4",
            "--nepisodes", "16", "--val-episodes", "4", "--nworker", "0"]

    assert demo.run(argv) == 0

    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    for model in ("untrained", "trained"):
        for shot in ("1shot", "5shot"):
            numbers = results[model][shot]
            assert set(numbers) == {"miou", "fbiou"}
            assert 0.0 <= numbers["miou"] <= 100.0 and 0.0 <= numbers["fbiou"] <= 100.0
    assert 0.0 <= results["wrong_support"]["miou"] <= 100.0 and results["wrong_support"]["episodes"] == 16
    assert results["distractors"]["max_per_image"] == 2
    assert 0.0 < results["distractors"]["test_queries_with_other_objects"] <= 100.0
    pretraining = results["backbone_pretraining"]
    assert pretraining["done"] and pretraining["seconds"] > 0 and pretraining["test_classes_never_drawn"] == [0, 1, 2, 3, 4]
    assert results["random_weights"] == {"clip": False, "backbone": False}
    priors = results["cam_priors"]
    assert priors["cam_size"] == 4 and priors["pairs"] > 0 and 0.0 <= priors["miou_best"] <= 100.0
    assert 0.0 < priors["miou_full_image"] < 100.0 and "CAM priors:" in printed
    assert (out / "prior_quality" / "quality.md").is_file() and (out / "prior_quality" / "examples.png").is_file()
    assert results["two_supports"] and all(len(row["classes"]) == 2 for row in results["two_supports"])
    assert "held-out accuracy" in printed and "supports of another class cost" in printed
    for picture in ("qualitative.png", "test_episodes.png"):
        assert (out / picture).stat().st_size > 0
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


def test_pretraining_images_hold_training_classes_only():
    classes = pretrain.training_classes("pascal", 0)
    assert classes == list(range(5, 20))
    for k in range(60):
        rng = np.random.default_rng([0, 7, 1, 5, k])
        image, listed = synthetic.render_image(rng, classes[k % len(classes)], classes, max_distractors=2)
        assert image.dtype == np.uint8 and image.ndim == 3
        assert listed[0] == classes[k % len(classes)] and set(listed) <= set(classes)
    with pytest.raises(ValueError, match="not among the classes"):
        synthetic.render_image(np.random.default_rng(0), 2, classes)


def test_pretrained_backbone_is_a_torchvision_state_dict_that_learned(tmp_path):
    out = tmp_path / "vgg16.pth"
    argv = [str(out), "--backbone", "vgg16", "--img-size", "32", "--images-per-class", "2", "--heldout-per-class",
            "1", "--epochs", "2", "--bsz", "8"]

    assert pretrain.main(argv) == 0

    report = json.loads(out.with_suffix(".json").read_text())
    assert report["classes"] == list(range(5, 20)) and report["test_classes_never_drawn"] == [0, 1, 2, 3, 4]
    assert len(report["history"]) == 2 and report["images"] == 30 and report["heldout_images"] == 15
    trained = build_backbone("vgg16", out)  # strict torchvision keys and shapes
    torch.manual_seed(0)
    initial = build_backbone("vgg16", "none")
    assert not torch.equal(trained.features[0].weight, initial.features[0].weight)
    # the pretraining head is dropped: the torchvision classifier keeps its random initialisation
    assert torch.equal(trained.classifier[0].weight, initial.classifier[0].weight)


def test_pretraining_flags_are_checked(capsys):
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["x.pth", "--epochs", "0"])
    assert exit_info.value.code == 2 and "--epochs must be at least 1" in capsys.readouterr().err


def test_wrong_support_episodes_keep_the_query_and_take_another_class_supports(synthetic_root, tmp_path):
    from tests.data_helpers import write_fake_cams

    cams = write_fake_cams(synthetic_root / "splits", tmp_path, size=4)
    dataset = build_dataset("pascal", datapath=synthetic_root, fold=0, split="test", shot=2, img_size=32,
                            cam_train_path=cams["pascal_trn"], cam_val_path=cams["pascal_val"],
                            splitpath=synthetic_root / "splits", nepisodes=40, seed=0)
    wrong = WrongSupportEpisodes(dataset, seed=0)
    listed = {(name, cls) for name, cls in dataset.img_metadata}
    assert len(wrong) == 40
    for index in range(0, 40, 7):
        true, donor = dataset.episodes[index], dataset.episodes[wrong.donors[index]]
        assert donor.class_id != true.class_id and true.query not in donor.supports
        assert not any((name, true.class_id) in listed for name in donor.supports)  # no object of the query's class
        batch, original, donor_batch = wrong[index], dataset[index], dataset[wrong.donors[index]]
        assert batch["query_name"] == true.query and int(batch["class_id"]) == true.class_id
        assert torch.equal(batch["query_mask"], original["query_mask"])
        assert torch.equal(batch["query_cam"], original["query_cam"])
        assert batch["support_names"] == list(donor.supports)
        assert torch.equal(batch["support_masks"], donor_batch["support_masks"])
        assert torch.equal(batch["support_cams"], donor_batch["support_cams"])
        assert int(batch["support_class_id"]) == donor.class_id
    assert WrongSupportEpisodes(dataset, seed=0).donors == wrong.donors  # seeded
