"""priors/recipes: the recipe registry, the released recipe behind the interface, and CLIP-ES against its released
code (golden values measured by running CLIP-ES's generate_cams_voc12.py with CPU shims on the same random
weights; the procedure is in docs/priors.md)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from common.io import names_sha256
from data.benchmarks import CLASS_NAMES, COCO_CLASSES, PASCAL_CLASSES
from priors.recipes import clip_gradcam as cg
from priors.recipes import DEFAULT_PRIOR, PRIOR_RECIPES, build_prior
from priors.recipes.clip_es import ClipESPreprocess, box_mask, build_clip_es, sinkhorn_affinity
from priors.recipes.clip_es_names import CLIP_ES_BACKGROUND, clip_es_vocabulary
from priors.recipes.clip_vit import build_clip_vit, load_clip_vit, random_clip_vit_state_dict
from tests.data_helpers import TINY_CLIP, TINY_VIT
from tests.golden_spread import check_close, check_deviation

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def tiny_vit():
    return build_clip_vit(random_clip_vit_state_dict(0, **TINY_VIT))


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


# ---------------------------------------------------------------------------------------------------------
# Registry and the released recipe
# ---------------------------------------------------------------------------------------------------------
def test_registry():
    assert DEFAULT_PRIOR == "gradcam-rn50" and set(PRIOR_RECIPES) == {"gradcam-rn50", "clip-es"}
    with pytest.raises(ValueError, match="unknown prior recipe 'nope'; choose one of gradcam-rn50, clip-es"):
        build_prior("nope", PASCAL_CLASSES)


@pytest.mark.golden
def test_gradcam_rn50_recipe_gives_the_released_golden_values():
    """The released recipe through the interface: the files of the released scripts (tests/golden), as
    priors/recipes/clip_gradcam.py's own golden test checks them."""
    golden = torch.load(GOLDEN / "cam_released_tiny.pt", map_location="cpu", weights_only=True)
    model = cg.build_clip_from_state_dict(cg.random_clip_state_dict(golden["seed"], **golden["clip_config"]))
    for benchmark in ("pascal", "coco"):
        rows = [i for i, b in enumerate(golden["benchmark"]) if b == benchmark]
        recipe = build_prior("gradcam-rn50", CLASS_NAMES[benchmark], model=model, weights_sha256="abc")
        images = [Image.open(io.BytesIO(golden["images"][golden["image"][i]].numpy().tobytes())) for i in rows]
        lists = [[golden["class_idx"][i]] for i in rows]
        lists[0] = lists[0] * 2  # two rows of one image in one request: regrouped, not recomputed
        maps = recipe(images, lists, cam_size=golden["cam_size"])
        expected = golden["cams"][rows]
        torch.testing.assert_close(maps[0][1], maps[0][0])
        check_close(f"gradcam-rn50 recipe {benchmark} CAMs", torch.cat([m[:1] for m in maps]), expected, 2e-3)
    settings = recipe.settings  # the keys gradcam-rn50 folders have recorded since format 2 (they resume)
    assert recipe.version == "clip-rn50-gradcam-released/1" and settings["clip_weights_sha256"] == "abc"
    assert settings["precision"] == "fp32" and settings["prompt_template"] == "a photo of a {}"
    assert sorted(settings) == ["class_names_sha256", "clip_image_size", "clip_weights_sha256", "precision",
                                "prompt_template"] and not recipe.reads_image_labels
    assert recipe.name == "gradcam-rn50" and recipe.device == torch.device("cpu")


def test_gradcam_rn50_recipe_checks_its_request():
    model = cg.build_clip_from_state_dict(cg.random_clip_state_dict(1, **TINY_CLIP))
    recipe = build_prior("gradcam-rn50", PASCAL_CLASSES, model=model)
    with pytest.raises(ValueError, match="outside 0..19"):
        recipe(_images([(64, 48)]), [[20]])
    with pytest.raises(ValueError, match="1 images but 2 class lists"):
        recipe(_images([(64, 48)]), [[1], [2]])
    maps = recipe(_images([(64, 48), (50, 70)]), [[1, 2], []], cam_size=25)
    assert [tuple(m.shape) for m in maps] == [(2, 25, 25), (0, 25, 25)]


# ---------------------------------------------------------------------------------------------------------
# CLIP-ES pieces
# ---------------------------------------------------------------------------------------------------------
def test_openai_vit_b16_names_load_into_open_clip():
    """OpenAI's ViT-B/16 state dict (names and shapes measured from OpenAI's model.py architecture) loads into
    open_clip's model strictly, as ViT-B/16: 12 blocks of 12 heads, patch 16, a 14x14 grid."""
    from open_clip.model import build_model_from_openai_state_dict

    shapes = json.loads((GOLDEN / "clip_vit_b16_openai_keys.json").read_text())["state_dict_shapes"]
    with torch.device("meta"):  # names and shapes only: nothing is allocated
        state = {k: torch.empty(v) for k, v in shapes.items()}
        model = build_model_from_openai_state_dict(state, quick_gelu=True, cast_dtype=None)
        with pytest.raises(RuntimeError, match="Unexpected key"):
            build_model_from_openai_state_dict({**state, "visual.extra": torch.empty(1)}, quick_gelu=True)
    visual = model.visual
    assert len(visual.transformer.resblocks) == 12 and visual.transformer.resblocks[0].attn.num_heads == 12
    assert visual.conv1.kernel_size == (16, 16) and visual.positional_embedding.shape == (197, 768)
    assert set(random_clip_vit_state_dict.__kwdefaults__) >= {"width", "layers", "patch_size"}


def test_preprocess_keeps_the_aspect_ratio_in_multiples_of_16():
    prep = ClipESPreprocess(16)
    out = prep(_images([(200, 120)])[0])
    assert out.pixels.shape == (3, 128, 208) and out.size == (200, 120)
    assert prep(Image.new("L", (32, 17))).pixels.shape == (3, 32, 32)


def test_box_mask_is_clip_es_boxes():
    cam = np.zeros((10, 12), np.float32)
    cam[2:5, 3:7] = 1.0   # one region, inside
    cam[6:10, 8:12] = 0.6  # one touching the bottom-right corner
    mask = box_mask(cam, 0.4)
    assert mask[2:5, 3:7].all() and mask[6:9, 8:11].all()
    # released quirk: a box ends at (w - 1, h - 1) exclusive, so the last row and column are never inside
    assert not mask[:, 11].any() and not mask[9].any()
    assert mask.sum() == 3 * 4 + 3 * 3
    assert not box_mask(np.zeros((5, 5), np.float32), 0.4).any()


def test_sinkhorn_affinity_is_symmetric_and_positive():
    attention = torch.rand(6, 6).softmax(dim=-1)
    affinity = sinkhorn_affinity(attention)
    torch.testing.assert_close(affinity, affinity.T)
    assert (affinity > 0).all()


def test_vocabulary():
    names, background, threshold = clip_es_vocabulary(PASCAL_CLASSES, "pascal")
    assert names[14] == "person with clothes,people,human" and len(background) == 25 and threshold == 0.4
    names, background, threshold = clip_es_vocabulary(COCO_CLASSES, "coco")
    assert names[3] == "motorbike" and "keyboard" not in background and threshold == 0.7
    names, background, threshold = clip_es_vocabulary(["tree", "ab wheel"])
    assert names == ("tree", "ab wheel") and "tree" not in background and threshold == 0.4
    assert len(background) == len(CLIP_ES_BACKGROUND["coco"]) - 1
    with pytest.raises(ValueError, match="20 pascal classes"):
        clip_es_vocabulary(COCO_CLASSES, "pascal")


def test_clip_es_outputs_label_modes_and_batching(tiny_vit):
    images = _images([(200, 120), (96, 160), (200, 120)], seed=4)
    lists = [[0, 3], [5], [14, 2, 14]]
    recipe = build_clip_es(PASCAL_CLASSES, model=tiny_vit, benchmark="pascal")
    together = recipe(images, lists, cam_size=30)
    assert [tuple(m.shape) for m in together] == [(2, 30, 30), (1, 30, 30), (3, 30, 30)]
    assert all(float(m.min()) >= 0 and float(m.max()) <= 1 + 1e-6 for m in together)
    alone = [recipe([image], [classes], cam_size=30)[0] for image, classes in zip(images, lists)]
    for a, b in zip(together, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[2][0], together[2][2])  # a class asked twice: the same map
    highres = recipe(images[:1], lists[:1], cam_size=None)[0]
    assert highres.shape == (2, 120, 200)
    image_mode = build_clip_es(PASCAL_CLASSES, model=tiny_vit, benchmark="pascal", label_mode="image")
    assert not torch.allclose(image_mode(images[:1], lists[:1])[0], recipe(images[:1], lists[:1])[0], atol=1e-3)
    assert recipe(images[:1], [[]])[0].shape == (0, 50, 50)
    settings = image_mode.settings
    assert settings["label_mode"] == "image" and settings["box_threshold"] == 0.4 and image_mode.version == "clip-es/1"
    assert image_mode.reads_image_labels and not recipe.reads_image_labels
    assert settings["class_names_sha256"] == names_sha256(PASCAL_CLASSES)
    assert settings["prompt_template"] == "a clean origami {}." and len(settings["background_names"]) == 25
    with pytest.raises(ValueError, match="label_mode"):
        build_clip_es(PASCAL_CLASSES, model=tiny_vit, label_mode="own")


def test_clip_es_fp16_runs_close_to_fp32():
    state = random_clip_vit_state_dict(0, **TINY_VIT)
    images, lists = _images([(120, 90)], seed=2), [[1, 7]]
    fp32 = build_clip_es(PASCAL_CLASSES, model=build_clip_vit(state))(images, lists)[0]
    fp16 = build_clip_es(PASCAL_CLASSES, model=build_clip_vit(state, precision="fp16"))(images, lists)[0]
    # float16 moves the maps a little (here ~0.02 on average: the box threshold is a step function)
    assert fp16.dtype == torch.float32 and torch.isfinite(fp16).all() and (fp16 - fp32).abs().mean() < 0.05


def test_vit_weights_files(tmp_path):
    path = tmp_path / "vit.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in random_clip_vit_state_dict(3, **TINY_VIT).items()}}, path)
    model = load_clip_vit(path)
    assert model.visual.conv1.kernel_size == (16, 16) and not any(p.requires_grad for p in model.parameters())
    recipe = build_clip_es(PASCAL_CLASSES, weights=path)
    assert len(recipe.settings["clip_weights_sha256"]) == 64
    with pytest.raises(cg.ClipWeightsError, match="no such file .*ViT-B-16.pt"):
        load_clip_vit(tmp_path / "missing.pt")
    torch.save(cg.random_clip_state_dict(0, **TINY_CLIP), tmp_path / "rn50.pt")
    with pytest.raises(cg.ClipWeightsError, match="not an OpenAI CLIP ViT checkpoint .*a ResNet CLIP"):
        load_clip_vit(tmp_path / "rn50.pt")
    (tmp_path / "notes.txt").write_text("no")
    with pytest.raises(cg.ClipWeightsError, match="neither a TorchScript archive"):
        load_clip_vit(tmp_path / "notes.txt")


# ---------------------------------------------------------------------------------------------------------
# Parity with CLIP-ES's released code
# ---------------------------------------------------------------------------------------------------------
def _min_max(maps: np.ndarray) -> np.ndarray:
    maps = maps - maps.min(axis=(-2, -1), keepdims=True)
    return np.float32(maps / (1e-7 + maps.max(axis=(-2, -1), keepdims=True)))


# At least 10x the worst deviation measured across CPU kernels, threads and oneDNN (docs/testing.md): the
# patch-grid CAMs 1.1e-4, the refined ones 4.4e-4 (ViT-B/16 shapes), the saved float16 ones 2.5e-4.
GRID_TOL = 2e-3
REFINED_TOL = 5e-3


def _check_clip_es_golden(name: str) -> None:
    golden = torch.load(GOLDEN / name, map_location="cpu", weights_only=True)
    state = random_clip_vit_state_dict(golden["seed"], **golden["config"])
    checksum = sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point())
    # torch.randn rounds differently under another kernel set (ATEN_CPU_CAPABILITY=default: 6e-9 relative);
    # another generator would change the weights entirely
    check_deviation(f"{name} weights checksum (relative)", abs(checksum / golden["checksum"] - 1), 1e-6,
                    "random_clip_vit_state_dict no longer gives the weights the golden values were measured with")
    model = build_clip_vit(state)
    images = [Image.open(io.BytesIO(blob.numpy().tobytes())) for blob in golden["images"]]
    assert len({round(im.size[0] / im.size[1], 2) for im in images}) >= 3, "three aspect ratios"
    for mode, expected in golden["modes"].items():
        recipe = build_clip_es(PASCAL_CLASSES, model=model, benchmark="pascal", label_mode=mode)
        inputs = [recipe.preprocess(im) for im in images]
        ours = recipe.compute(inputs, expected["labels"], cam_size=None)     # at each image's size
        for i, image in enumerate(images):
            # their refined CAM at the patch grid, normalised and resized to the image as their script saves it
            theirs = np.stack([cv2.resize(m, image.size) for m in _min_max(expected["grid_refined"][i].numpy())])
            assert theirs.max() > 0.9 and theirs.mean() < 0.8, "degenerate golden maps"
            check_close(f"{name} {mode} refined CAMs", ours[i], torch.from_numpy(theirs), REFINED_TOL)
            if expected["attn_highres"][i] is not None:  # their own float16 .npy content
                check_close(f"{name} {mode} saved float16 CAMs", ours[i], expected["attn_highres"][i].float(),
                            REFINED_TOL)
            tokens, attention = recipe._trunk(inputs[i].pixels[None])
            grid = tuple(s // 16 for s in inputs[i].pixels.shape[1:])
            cams, _ = recipe._head_cams(tokens[0], expected["labels"][i], grid)
            check_close(f"{name} {mode} patch-grid CAMs", torch.as_tensor(cams), expected["grid_cam"][i], GRID_TOL)
        small = recipe.compute(inputs[:1], expected["labels"][:1], cam_size=50)[0]
        expected_small = np.stack([cv2.resize(m, (50, 50)) for m in ours[0].numpy()])
        np.testing.assert_allclose(small.numpy(), expected_small, atol=1e-6)


@pytest.mark.golden
def test_clip_es_matches_released_code_tiny():
    """Both label modes ('image': CLIP-ES's own; 'all': its code run with all 20 classes as the image's labels),
    three aspect ratios, a small random ViT."""
    _check_clip_es_golden("clip_es_tiny.pt")


@pytest.mark.slow
@pytest.mark.golden
def test_clip_es_matches_released_code_vit_b16():
    """ViT-B/16's shapes (random weights), three aspect ratios, CLIP-ES's own label mode."""
    _check_clip_es_golden("clip_es_vitb16.pt")


@pytest.mark.cuda
def test_clip_es_cuda_matches_cpu(tiny_vit):
    import copy

    images, lists = _images([(200, 120), (96, 160)], seed=6), [[0, 3], [5]]
    cpu = build_clip_es(PASCAL_CLASSES, model=tiny_vit, benchmark="pascal")(images, lists)
    recipe = build_clip_es(PASCAL_CLASSES, model=copy.deepcopy(tiny_vit), device="cuda", benchmark="pascal")
    assert recipe.device.type == "cuda"
    gpu = recipe(images, lists)
    for a, b in zip(gpu, cpu):
        assert a.device.type == "cpu" and (a - b).abs().mean() < 1e-3  # float rounding; the box mask is a step
