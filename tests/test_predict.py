"""predict.py and apps.predictor on drawn images with random weights (ResNet50 IMR-HSNet, a tiny random CLIP)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

import predict
from data.benchmarks import COCO_CLASSES, PASCAL_CLASSES
from apps.predictor import Segmenter, prompt_classes
from model import build_model
from priors.recipes import clip_gradcam as cg
from model.checkpoint import CheckpointMismatchError
from tests.data_helpers import TINY_CLIP

REPO_ROOT = Path(__file__).resolve().parents[1]
IMG_SIZE = 64
SIZES = [(96, 72), (80, 100), (72, 64), (120, 90), (88, 88)]  # (W, H): supports 0-2, queries 3-4


def _draw(path: Path, size: tuple[int, int], seed: int) -> None:
    """A coloured background with one ellipse, saved as JPEG."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    x0, y0 = int(rng.integers(0, w // 3)), int(rng.integers(0, h // 3))
    ImageDraw.Draw(img).ellipse([x0, y0, x0 + w // 2, y0 + h // 2], fill=(230, 210, 40))
    img.save(path)


@pytest.fixture(scope="module")
def assets(module_tmp) -> dict[str, Path]:
    """A random-init ResNet50 checkpoint (released ``module.`` keys), a tiny random CLIP, and drawn images."""
    root = module_tmp("predict")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("resnet50", backbone_weights="none")
    torch.save({"module." + k: v for k, v in model.state_dict().items()}, root / "best_model.pt")
    torch.save(cg.random_clip_state_dict(0, **TINY_CLIP), root / "clip.pt")
    (root / "supports").mkdir()
    (root / "queries").mkdir()
    for i, size in enumerate(SIZES):
        _draw(root / ("supports" if i < 3 else "queries") / f"img{i}.jpg", size, seed=i)
    (root / "supports" / "notes.txt").write_text("not an image; folders are read by extension")
    return {"root": root, "ckpt": root / "best_model.pt", "clip": root / "clip.pt",
            "supports": root / "supports", "queries": root / "queries"}


def _argv(assets, out: Path, support, query, *extra: str) -> list[str]:
    return ["--load", str(assets["ckpt"]), "--backbone", "resnet50", "--clip-weights", str(assets["clip"]),
            "--class-name", "zebra", "--support", *map(str, support), "--query", *map(str, query),
            "--out", str(out), "--img-size", str(IMG_SIZE), "--device", "cpu", *extra]


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.array(img)


def _check_outputs(out: Path, supports: list[Path], queries: list[Path]) -> None:
    names = {p.name for p in out.iterdir()}
    expected = {f"{q.stem}_mask.png" for q in queries} | {f"{q.stem}_overlay.png" for q in queries} | \
               {f"support_{s.stem}_mask.png" for s in supports} | {"predict.json"}
    assert names == expected
    assert json.loads((out / "predict.json").read_text())["clip_precision"] == "fp32"  # --precision auto, CPU
    masks = [(out / f"{q.stem}_mask.png", q) for q in queries] + \
            [(out / f"support_{s.stem}_mask.png", s) for s in supports]
    for mask_path, source in masks:
        mask = _read(mask_path)
        with Image.open(source) as img:
            img = ImageOps.exif_transpose(img)
            assert mask.shape == (img.height, img.width)  # the original resolution, upright
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    for q in queries:
        overlay = _read(out / f"{q.stem}_overlay.png")
        with Image.open(q) as img:
            img = ImageOps.exif_transpose(img)  # small images: tiles at full size, image | CAM | mask with 2 gaps
            assert overlay.shape == (img.height, 3 * img.width + 2 * predict.OVERLAY_GAP, 3)
            np.testing.assert_allclose(overlay[:, :img.width].astype(int), np.asarray(img.convert("RGB")), atol=1)


@pytest.fixture(scope="module")
def folder_run(assets, module_tmp) -> Path:
    """The CLI with folders: 3 supports (a .txt beside them is skipped), 2 queries."""
    out = module_tmp("out_folders")
    assert predict.cli(_argv(assets, out, [assets["supports"]], [assets["queries"]])) == 0
    return out


def test_prompt_classes():
    classes, index = prompt_classes("Dining Table")
    assert classes == PASCAL_CLASSES and classes[index] == "diningtable"  # deduplicated: released CAMs
    classes, index = prompt_classes("  zebra ")
    assert classes == PASCAL_CLASSES + ("zebra",) and index == 20
    classes, index = prompt_classes("zebra", "coco")
    assert classes == COCO_CLASSES and classes[index] == "zebra"
    with pytest.raises(ValueError, match="empty"):
        prompt_classes(" - ")
    with pytest.raises(ValueError, match="vocabulary"):
        prompt_classes("zebra", "imagenet")


def test_cli_one_support(assets, tmp_path):
    support = [assets["supports"] / "img1.jpg"]
    rotated = tmp_path / "phone.jpg"  # stored 80x60, EXIF orientation 6: shown (and segmented) as 60x80
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (80, 60), (90, 30, 200)).save(rotated, exif=exif)
    queries = sorted(assets["queries"].glob("*.jpg")) + [rotated]
    tmp_path = tmp_path / "out"
    assert predict.cli(_argv(assets, tmp_path, support, queries, "--stage", "1")) == 0
    _check_outputs(tmp_path, support, queries)
    assert _read(tmp_path / "phone_mask.png").shape == (80, 60)


def test_cli_folders_several_supports(assets, folder_run):
    _check_outputs(folder_run, sorted(assets["supports"].glob("*.jpg")), sorted(assets["queries"].glob("*.jpg")))


def test_api_matches_cli(assets, folder_run):
    supports = [Image.open(p).convert("RGB") for p in sorted(assets["supports"].glob("*.jpg"))]
    query_paths = sorted(assets["queries"].glob("*.jpg"))
    queries = [Image.open(p).convert("RGB") for p in query_paths]
    seg = Segmenter.from_checkpoint(assets["ckpt"], "resnet50", clip_weights=assets["clip"], device="cpu",
                                    img_size=IMG_SIZE)
    result = seg.segment(supports, queries, "zebra")
    assert result.prompts[result.class_index] == "a photo of a zebra"
    for path, mask, cam in zip(query_paths, result.query_masks, result.query_cams):
        np.testing.assert_array_equal(_read(folder_run / f"{path.stem}_mask.png"), mask * 255)
        assert cam.shape == (IMG_SIZE // 8, IMG_SIZE // 8)
    for path, mask in zip(sorted(assets["supports"].glob("*.jpg")), result.support_masks):
        np.testing.assert_array_equal(_read(folder_run / f"support_{path.stem}_mask.png"), mask * 255)
    assert [[m.shape for m in row] for row in result.support_masks_per_query] == \
           [[m.shape for m in result.support_masks]] * len(queries)

    # The query masks are IMRHSNet.predict_mask_nshot's K-shot vote on the same episode.
    q = queries[0]
    batch = {"query_img": seg._images([q]), "support_imgs": seg._images(supports).unsqueeze(0),
             "support_cams": torch.from_numpy(np.stack(result.support_cams)).unsqueeze(0),
             "query_cam": torch.from_numpy(result.query_cams[0]).unsqueeze(0), "org_query_imsize": (q.width, q.height)}
    vote = seg.model.predict_mask_nshot(batch, nshot=len(supports), stage=2)
    np.testing.assert_array_equal(vote[0].numpy().astype(np.uint8), result.query_masks[0])


@pytest.mark.parametrize("case", ["not_an_image", "empty_folder", "missing", "same_stem"])
def test_cli_bad_inputs_name_the_file(assets, tmp_path, capsys, case):
    support, query = [assets["supports"] / "img0.jpg"], [assets["queries"] / "img3.jpg"]
    if case == "not_an_image":
        bad = tmp_path / "photo.jpg"
        bad.write_text("this is text")
        query = [bad]
    elif case == "empty_folder":
        bad = tmp_path / "empty"
        bad.mkdir()
        (bad / "readme.md").write_text("no images here")
        support = [bad]
    elif case == "missing":
        bad = tmp_path / "nowhere.png"
        query = [bad]
    else:
        bad = tmp_path / "img0.png"
        _draw(bad, (64, 64), seed=9)
        support = support + [bad]
    assert predict.cli(_argv(assets, tmp_path / "out", support, query)) == 2
    err = capsys.readouterr().err
    assert err.startswith("predict.py: error: ") and str(bad) in err
    assert not (tmp_path / "out").exists()


def test_cli_unknown_backbone(assets, tmp_path, capsys):
    argv = _argv(assets, tmp_path, [assets["supports"]], [assets["queries"]])
    argv[argv.index("resnet50")] = "resnet18"
    with pytest.raises(SystemExit) as exc:
        predict.cli(argv)
    assert exc.value.code == 2 and "resnet18" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        Segmenter.from_checkpoint(assets["ckpt"], "resnet18", clip_weights=assets["clip"], device="cpu")


@pytest.mark.parametrize("state, message", [
    ({"module.backbone.features.0.weight": torch.zeros(64, 3, 3, 3)}, "made with backbone 'vgg16'"),
    ({"hpn_learner.foo": torch.zeros(1)}, "missing keys"),
])
def test_cli_checkpoint_mismatch(assets, tmp_path, capsys, state, message):
    ckpt = tmp_path / "other_model.pt"
    torch.save(state, ckpt)
    argv = _argv(assets, tmp_path / "out", [assets["supports"] / "img0.jpg"], [assets["queries"]])
    argv[argv.index(str(assets["ckpt"]))] = str(ckpt)
    assert predict.cli(argv) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and message in err
    with pytest.raises(CheckpointMismatchError, match=message):
        Segmenter.from_checkpoint(ckpt, "resnet50", clip_weights=assets["clip"], device="cpu")


def test_script_runs_from_another_folder(tmp_path):
    """``python /path/to/predict.py --help`` works from any working directory (heavy imports are lazy)."""
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "predict.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--class-name" in proc.stdout
