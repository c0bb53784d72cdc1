"""Each kind of prior end to end on the synthetic benchmark, through the scripts' entry points at tiny sizes: the
released recipe (``generate_cam_voc.py``'s job, tiny random CLIP RN50), CLIP-ES (``--prior clip-es``, tiny random
CLIP ViT) and imported PNGs (``python -m data.priors import`` of the ground-truth label maps). ``train.py`` trains
one epoch on each and ``test.py`` evaluates, both after checking the folders' ``cam_manifest.json``; a missing or
unrecorded prior file ends in one line naming it, followed by the command that makes it for that kind."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch

import test as test_script
import train
from priors.recipes import PRIOR_RECIPE_IDS
from data import priors as data_priors
from data.cam_files import cam_path
from data.cam_manifest import MANIFEST_NAME, manifest_digest, read_manifest
from data.splits import read_pascal_split
from priors import cam_job
from priors.recipes import clip_gradcam as cg
from priors.recipes.clip_vit import random_clip_vit_state_dict
from tests.data_helpers import TINY_CLIP, TINY_VIT
from tests.train_helpers import IMG_SIZE, TinyInputs, make_tiny_inputs

pytestmark = pytest.mark.slow
FINAL_LINE = re.compile(r"^Fold 0 mIoU: +(\d+\.\d\d) \t FB-IoU: +(\d+\.\d\d)$", re.MULTILINE)
KINDS = ("gradcam-rn50", "clip-es", "imported")
CAM_SIZE = IMG_SIZE // 8  # the side the model reads at IMG_SIZE
# ResNet50: built faster than VGG16 (whose classifier torchvision makes first) and 0.1 GB checkpoints, not 0.6 GB;
# two episodes per validation and test
RUN = ("--backbone", "resnet50", "--bsz", "2", "--nepisodes", "2")


@pytest.fixture(scope="module")
def tiny(synthetic_root, module_tmp) -> tuple[TinyInputs, dict[str, Path]]:
    """The tiny PASCAL split lists (its random CAM folders are not used) and tiny random CLIP weights files."""
    out = module_tmp("prior_kinds")
    inputs = make_tiny_inputs(synthetic_root, out)
    weights = {"gradcam-rn50": out / "tiny_rn50.pt", "clip-es": out / "tiny_vit.pt"}
    torch.save(cg.random_clip_state_dict(1, **TINY_CLIP), weights["gradcam-rn50"])
    torch.save(random_clip_vit_state_dict(0, **TINY_VIT), weights["clip-es"])
    return inputs, weights


def make_priors(kind: str, inputs: TinyInputs, weights: dict[str, Path], folder: Path) -> TinyInputs:
    """The training and validation prior folders of ``kind`` for the tiny split, made as a user makes them."""
    common = ["--datapath", str(inputs.datapath), "--splitpath", str(inputs.splitpath)]
    trn, val = folder / "trn", folder / "val"
    if kind == "imported":
        masks = inputs.datapath / "VOC2012" / "SegmentationClassAug"
        for split, out in (("trn", trn), ("val", val)):
            assert data_priors.main(["import", "--benchmark", "pascal", "--source", str(masks), "--pattern",
                                     "{image}.png", "--values", "label", "--cam-size", str(CAM_SIZE), "--split",
                                     split, "--out", str(out), "--no-progress", *common]) == 0
    else:
        assert cam_job.main("pascal", [*common, "--traincampath", str(trn), "--valcampath", str(val), "--prior", kind,
                                       "--clip-weights", str(weights[kind]), "--cam-size", str(CAM_SIZE),
                                       "--device", "cpu", "--nworker", "0", "--no-progress"]) == 0
    return TinyInputs(inputs.datapath, inputs.splitpath, trn, val)


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_test_on_each_prior_kind(tiny, kind, tmp_path, capsys):
    inputs, weights = tiny
    data = make_priors(kind, inputs, weights, tmp_path / "priors")
    for folder in (data.traincam, data.valcam):
        manifest = read_manifest(folder)
        assert manifest.settings.recipe == PRIOR_RECIPE_IDS[kind] and manifest.settings.settings["cam_size"] == CAM_SIZE
        cam = torch.load(next(folder.rglob("*--*.pt")), weights_only=True)
        assert cam.shape == (CAM_SIZE, CAM_SIZE) and 0 <= float(cam.min()) <= float(cam.max()) <= 1
    if kind == "clip-es":
        assert read_manifest(data.valcam).settings.settings["label_mode"] == "all"

    run = tmp_path / "run"
    assert train.cli(data.argv("--logpath", str(run), "--niter", "1", *RUN)) == 0
    recorded = json.loads((run / "args.json").read_text())["cam_manifests"]
    assert recorded == {"traincampath": manifest_digest(data.traincam), "valcampath": manifest_digest(data.valcam)}
    capsys.readouterr()
    load = str(run / "best_model.pt")
    assert test_script.cli(data.argv("--load", load, "--logpath", str(tmp_path / "test"), *RUN)) == 0
    assert FINAL_LINE.search(capsys.readouterr().out)
    results = json.loads((tmp_path / "test" / "results.json").read_text())
    assert results["cam_manifests"] == {"valcampath": manifest_digest(data.valcam)}

    # a prior file gone: one line naming it, then the command that makes it again for this kind
    name, cls = read_pascal_split(inputs.splitpath, "val", 0)[0]
    missing = cam_path(data.valcam, name, cls)
    missing.unlink()
    assert test_script.cli(data.argv("--load", load, "--logpath", str(tmp_path / "test2"), *RUN)) == 2
    first, command = capsys.readouterr().err.strip().splitlines()
    assert first.startswith("test.py: error: 1 of ") and f"(first: {missing});" in first
    if kind == "imported":
        assert command.startswith("import them (from the repository root) with: python -m data.priors import ")
        argv = shlex.split(command.split(" with: ", 1)[1])[3:]
        assert "--split" in argv and argv[argv.index("--split") + 1] == "val"
        assert data_priors.main([*argv, "--no-progress"]) == 0 and missing.is_file()  # that command mends it
    else:
        assert command.startswith("generate them (from the repository root) with: python generate_cam_voc.py ")
        assert ("--prior clip-es --clip-es-labels all" in command) == (kind == "clip-es")
    for checkpoint in run.glob("*.pt"):  # 0.1 GB each: not left in pytest's kept temporary folders
        checkpoint.unlink()


def test_an_unrecorded_or_foreign_prior_file_is_named(tiny, tmp_path, capsys):
    """An imported folder is checked like a generated one: a prior its manifest does not record (copied in by
    hand) stops the run with one line naming the file and the import that records it; priors imported for
    another benchmark's classes are refused."""
    inputs, weights = tiny
    data = make_priors("imported", inputs, weights, tmp_path / "priors")
    manifest = read_manifest(data.traincam)
    name, cls = read_pascal_split(inputs.splitpath, "trn", 1)[0]  # fold 0 trains on folds 1-3's lists
    manifest.images[name].classes.discard(cls)
    manifest.save()
    assert train.cli(data.argv("--logpath", str(tmp_path / "run"), "--niter", "1", *RUN)) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith(f"train.py: error: {cam_path(data.traincam, name, cls)} is not "
                                                f"recorded in {data.traincam / MANIFEST_NAME}")
    assert "finish the folder with: python -m data.priors import --benchmark pascal" in line
    assert not (tmp_path / "run").exists()
    argv = shlex.split(line.split("finish the folder with: ", 1)[1])[3:]
    assert data_priors.main([*argv, "--no-progress"]) == 0  # that command records it again
    assert cls in read_manifest(data.traincam).images[name].classes

    coco = tmp_path / "coco_priors"
    coco_splits = inputs.datapath / "splits"
    assert data_priors.main(["import", "--benchmark", "coco", "--naming", "tlg", "--split", "val", "--source",
                             str(inputs.datapath / "COCO2014" / "annotations"), "--out", str(coco), "--datapath",
                             str(inputs.datapath), "--splitpath", str(coco_splits), "--no-progress"]) == 0
    copy = tmp_path / "pascal_named_as_coco"
    copy.mkdir()
    for path in data.valcam.glob("*--*.pt"):
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / MANIFEST_NAME).write_text((coco / MANIFEST_NAME).read_text())
    wrong = TinyInputs(data.datapath, data.splitpath, data.traincam, copy)
    assert train.cli(wrong.argv("--logpath", str(tmp_path / "run"), "--niter", "1", *RUN)) == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and f"{copy / MANIFEST_NAME}: its CAMs were made for other class names" in line
