"""docs/extending.md, proven: a prior recipe, a benchmark and a backbone are each added from this file through
the public registries only (``priors.recipes.RECIPES``, ``data.benchmarks.BENCHMARK_SPECS``,
``model.backbone.BACKBONES``), and each runs end to end through the real entry points on the synthetic
benchmark: the CAM job (``generate_cam_*.py``'s), ``train.py`` for one epoch and ``test.py``. Nothing else of the
repository is edited, which is what the guide's "files to touch" counts claim."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import torch
from PIL import Image
from torch import nn

import test as test_script
import train
from common.io import names_sha256
from data.benchmarks import BENCHMARK_SPECS, PASCAL_CLASSES, BenchmarkSpec
from data.cam_files import cam_path
from data.cam_manifest import read_manifest
from data.pascal import DatasetPASCAL, cam_pairs as pascal_cam_pairs
from data.splits import read_pascal_split
from model.backbone import BACKBONES, BackboneSpec
from priors import cam_job
from priors.recipes import RECIPES, PriorRecipe, RecipeFlag, RecipeSpec
from tests.train_helpers import IMG_SIZE, TinyInputs, make_tiny_inputs

pytestmark = pytest.mark.slow
FINAL_LINE = re.compile(r"^Fold 0 mIoU: +(\d+\.\d\d) \t FB-IoU: +(\d+\.\d\d)$", re.MULTILINE)
CAM_SIZE = IMG_SIZE // 8
RUN = ("--bsz", "2", "--nepisodes", "2")


# ---------------------------------------------------------------------------------------------------------------
# A prior recipe: the image's brightness, blurred (a stand-in for a real CAM), with a flag of its own
# ---------------------------------------------------------------------------------------------------------------
class BrightnessPrior(PriorRecipe):
    """The image's grey level at ``cam_size``, raised to ``gamma``: the same map for every class."""

    name = "toy-brightness"

    def __init__(self, class_names: Sequence[str], gamma: float) -> None:
        super().__init__(class_names)
        self.gamma = gamma

    @property
    def settings(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "class_names_sha256": names_sha256(self.class_names)}

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return _grey

    def compute(self, inputs: Sequence[torch.Tensor], class_lists: Sequence[Sequence[int]],
                cam_size: int = CAM_SIZE) -> list[torch.Tensor]:
        lists = self.check_request(inputs, class_lists)
        out = []
        for grey, classes in zip(inputs, lists):
            small = torch.nn.functional.interpolate(grey[None, None], size=(cam_size, cam_size), mode="area")[0, 0]
            out.append(small.pow(self.gamma).expand(len(classes), cam_size, cam_size).clone())
        return out


def _grey(image: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(image.convert("L").tobytes()), dtype=torch.uint8).float().div(255).view(
        image.height, image.width)


def build_brightness(class_names: Sequence[str], *, gamma: float = 1.0, **unused: Any) -> BrightnessPrior:
    return BrightnessPrior(class_names, gamma)


BRIGHTNESS = RecipeSpec(
    "toy-brightness", "toy-brightness/1", build_brightness, "toy-brightness = the image's grey level",
    flags=(RecipeFlag(("--toy-gamma",), {"dest": "toy_gamma", "type": float, "default": None,
                                        "help": "--prior toy-brightness: the exponent"}),),
    options=lambda args, benchmark: {"gamma": args.toy_gamma or 1.0},
    command_flags=lambda settings: ["--toy-gamma", str(settings["gamma"])])


@pytest.fixture
def tiny(synthetic_root, tmp_path) -> TinyInputs:
    return make_tiny_inputs(synthetic_root, tmp_path / "tiny")


def _make_priors(benchmark: str, inputs: TinyInputs, folder: Path, *extra: str) -> TinyInputs:
    trn, val = folder / "trn", folder / "val"
    assert cam_job.main(benchmark, ["--datapath", str(inputs.datapath), "--splitpath", str(inputs.splitpath),
                                    "--traincampath", str(trn), "--valcampath", str(val), "--cam-size",
                                    str(CAM_SIZE), "--device", "cpu", "--nworker", "0", "--no-progress",
                                    *extra]) == 0
    return TinyInputs(inputs.datapath, inputs.splitpath, trn, val)


def _train_and_test(data: TinyInputs, run: Path, capsys, *flags: str) -> dict[str, Any]:
    assert train.cli(data.argv("--logpath", str(run / "train"), "--niter", "1", *RUN, *flags)) == 0
    capsys.readouterr()
    assert test_script.cli(data.argv("--load", str(run / "train" / "best_model.pt"), "--logpath",
                                     str(run / "test"), *RUN, *flags)) == 0
    assert FINAL_LINE.search(capsys.readouterr().out)
    return json.loads((run / "test" / "results.json").read_text())


def _remake_hint(data: TinyInputs, run: Path, capsys, *flags: str) -> str:
    """test.py's error once a validation CAM file is gone: the line naming it and the command that remakes it."""
    name, cls = read_pascal_split(data.splitpath, "val", 0)[0]  # the first test episode's query
    cam_path(data.valcam, name, cls).unlink()
    assert test_script.cli(data.argv("--load", str(run / "train" / "best_model.pt"), *RUN, *flags)) == 2
    for checkpoint in (run / "train").glob("*.pt"):  # not left in pytest's kept temporary folders
        checkpoint.unlink()
    return capsys.readouterr().err


def test_a_recipe_added_from_outside_runs_in_the_cam_job(tiny, tmp_path, monkeypatch, capsys):
    """Its flag, its settings in the manifest, its maps; train.py and test.py read it in the benchmark test."""
    monkeypatch.setitem(RECIPES, BRIGHTNESS.name, BRIGHTNESS)
    data = _make_priors("pascal", tiny, tmp_path / "priors", "--prior", "toy-brightness", "--toy-gamma", "2")
    settings = read_manifest(data.valcam).settings
    assert settings.recipe == "toy-brightness/1" and settings.settings["gamma"] == 2.0
    cam = torch.load(next(data.valcam.glob("*--*.pt")), weights_only=True)
    assert cam.shape == (CAM_SIZE, CAM_SIZE) and 0 <= float(cam.min()) <= float(cam.max()) <= 1
    with pytest.raises(SystemExit):  # its own flag, with another recipe
        cam_job.run_from_flags("pascal", ["--datapath", str(tiny.datapath), "--toy-gamma", "2"])
    assert "argument --toy-gamma: only with --prior toy-brightness" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# A benchmark: PASCAL's images under another name, with its own CAM folders and episode count
# ---------------------------------------------------------------------------------------------------------------
class ToyDataset(DatasetPASCAL):
    """PASCAL-5i's layout and split lists, registered as another benchmark."""

    benchmark = "toy"


TOY = BenchmarkSpec(
    name="toy", title="Toy-5i", nclass=20, class_names=PASCAL_CLASSES, nfolds=4, eval_episodes=3,
    cam_dirs=("CAM_TOY_Train", "CAM_TOY_Val"), cam_script=None, image_dir="VOC2012/JPEGImages", split_files={},
    dataset=ToyDataset, cam_pairs=pascal_cam_pairs, fold_classes=lambda fold: [fold * 5 + i for i in range(5)])


def test_a_benchmark_and_a_recipe_added_from_outside_run_through_the_cam_job_train_and_test(tiny, tmp_path,
                                                                                         monkeypatch, capsys):
    """With the recipe above: the CAM job, train.py and test.py on a benchmark and a recipe that are not the
    repository's; a missing prior names the generic CAM job with the recipe's own flag."""
    monkeypatch.setitem(BENCHMARK_SPECS, TOY.name, TOY)
    monkeypatch.setitem(RECIPES, BRIGHTNESS.name, BRIGHTNESS)
    data = _make_priors("toy", tiny, tmp_path / "priors", "--prior", "toy-brightness", "--toy-gamma", "2")
    flags = ("--benchmark", "toy", "--backbone", "resnet50")
    results = _train_and_test(data, tmp_path / "run", capsys, *flags)
    assert results["benchmark"] == "toy" and results["episodes"] == 2
    hint = _remake_hint(data, tmp_path / "run", capsys, *flags)
    assert "with: python -m priors.cam_job toy --datapath" in hint and "--prior toy-brightness --toy-gamma 2.0" in hint


# ---------------------------------------------------------------------------------------------------------------
# A backbone: three small convolution stages (strides 8, 16, 32), one feature each
# ---------------------------------------------------------------------------------------------------------------
class TinyConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.stages = nn.ModuleList([nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                                     nn.Conv2d(32, 64, 3, stride=2, padding=1)])


def extract_tiny(backbone: TinyConvNet, img: torch.Tensor) -> list[torch.Tensor]:
    feats, feat = [], backbone.stem(img)
    for stage in backbone.stages:
        feat = stage(feat)
        feats.append(feat)
        feat = torch.relu(feat)
    return feats


TINY_BACKBONE = BackboneSpec(build=TinyConvNet, extract=extract_tiny, group_sizes=(1, 1, 1), mid_channels=32,
                             released_file="tiny.pth", url="https://example.invalid/tiny.pth")


def test_a_backbone_added_from_outside_trains_and_tests(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(BACKBONES, "tiny", TINY_BACKBONE)
    data = make_tiny_inputs(synthetic_root, tmp_path / "tiny")
    results = _train_and_test(data, tmp_path / "run", capsys, "--backbone", "tiny")
    assert results["backbone"] == "tiny" and 0 <= results["miou"] <= 100
    for checkpoint in (tmp_path / "run" / "train").glob("*.pt"):
        checkpoint.unlink()
