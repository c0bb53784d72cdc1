"""priors/recipes/clip_gradcam.py: loading, the batched Grad-CAM against the per-image procedure, golden released values."""
from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.benchmarks import CLASS_NAMES, COCO_CLASSES, PASCAL_CLASSES
from priors.recipes import clip_gradcam as cg
from tests.clip_reference import per_image_reference_cams
from tests.data_helpers import TINY_CLIP
from tests.golden_spread import check_close, check_deviation

GOLDEN = Path(__file__).resolve().parent / "golden"
# A small random CLIP ResNet (full RN50 at 224 is too slow for many images on a 2-core CPU).
TINY_SEED = 1


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return cg.random_clip_state_dict(TINY_SEED, **TINY_CLIP)


@pytest.fixture(scope="module")
def tiny_clip(tiny_state):
    return cg.build_clip_from_state_dict(tiny_state)


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of different sizes and aspect ratios (one grayscale, as some VOC/COCO files are)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(60, 140)), int(rng.integers(60, 140))
        base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        base[h // 4: h // 2, w // 3: 2 * w // 3] = rng.integers(0, 255, 3, dtype=np.uint8)  # a flat block
        img = Image.fromarray(base)
        out.append(img.convert("L") if i == 1 else img)
    return out


def test_batched_equals_library_per_image(tiny_clip):
    """One trunk forward + one head backward for 6 images == pytorch-grad-cam on the whole CLIP, image by image."""
    images, classes = _images(6), [0, 7, 19, 3, 3, 12]
    ours = cg.compute_cams(tiny_clip, images, classes, PASCAL_CLASSES)
    ref = per_image_reference_cams(tiny_clip, images, classes, PASCAL_CLASSES)
    assert ours.shape == ref.shape == (6, 50, 50) and ours.dtype == torch.float32
    assert (ref.amax(dim=(1, 2)) > 0.5).sum() >= 3, "degenerate test: most reference maps are empty"
    # 2e-3: batched and per-image kernels round apart, up to 1.03e-4 at AVX2 with 4 threads (failed at 1e-4)
    torch.testing.assert_close(ours, ref, atol=2e-3, rtol=0)
    assert all(not p.requires_grad for p in tiny_clip.parameters()), "the reference must restore requires_grad"


def test_batch_size_invariance(tiny_clip):
    images, classes = _images(8, seed=3), [0, 1, 2, 3, 4, 5, 6, 19]
    cam = cg.ClipGradCAM(tiny_clip, PASCAL_CLASSES)
    batch = cam.preprocess_batch(images)
    together = cam(batch, classes)
    alone = torch.cat([cam(batch[i:i + 1], classes[i:i + 1]) for i in range(8)])
    # exact up to float rounding: the CPU convolutions pick other kernels for other batch sizes (~1e-5 on
    # the features), which the min-max normalisation can magnify where a map's range is small
    torch.testing.assert_close(together, alone, atol=2e-4, rtol=0)
    # each row gets its own class: another assignment of classes gives other maps
    swapped = cam(batch, classes[::-1])
    assert not torch.allclose(swapped, together, atol=1e-2)


def test_output_range_and_sizes(tiny_clip):
    cam = cg.ClipGradCAM(tiny_clip, COCO_CLASSES)
    batch = cam.preprocess_batch(_images(3, seed=5))
    assert batch.shape == (3, 3, 224, 224)
    maps = cam(batch, [0, 40, 79], cam_size=25)
    assert maps.shape == (3, 25, 25) and maps.dtype == torch.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    full = cam(batch, [0, 40, 79], cam_size=None)
    assert full.shape == (3, 224, 224)
    with pytest.raises(ValueError, match="outside"):
        cam(batch, [0, 40, 80])
    with pytest.raises(ValueError, match="class indices"):
        cam(batch, [0, 40])


def test_resize_is_half_pixel_bilinear():
    """cv2.resize's bilinear (as released) = half-pixel bilinear without antialiasing."""
    x = torch.rand(2, 224, 224)
    ours = cg.resize_cams(x.numpy(), 50)
    ref = F.interpolate(x[:, None], size=(50, 50), mode="bilinear", align_corners=False, antialias=False)[:, 0]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_preprocess_matches_clip_transform(tiny_clip):
    """Bicubic short side to 224, centre crop, CLIP mean/std -- the same as open_clip's own OpenAI transform."""
    import open_clip

    image = _images(1, seed=9)[0]
    ours = cg.clip_preprocess(224)(image)
    theirs = open_clip.image_transform(224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN,
                                       std=open_clip.OPENAI_DATASET_STD)(image)
    torch.testing.assert_close(ours, theirs)


# ---------------------------------------------------------------------------------------------------------
# Loading and bad weights
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.*deprecated:FutureWarning")
def test_load_state_dict_and_torchscript(tiny_clip, tiny_state, tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_state.items()}}, plain)
    loaded = cg.load_clip(plain)
    for (k, a), b in zip(tiny_clip.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert not loaded.training and all(not p.requires_grad for p in loaded.parameters())
    # OpenAI's RN50.pt is a TorchScript archive of the model
    archive = tmp_path / "archive.pt"
    torch.jit.trace_module(loaded, {"encode_image": torch.zeros(1, 3, 224, 224)}, check_trace=False).save(archive)
    from_archive = cg.load_clip(archive)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, from_archive.state_dict()[k]), k


def test_bad_weights(tmp_path, tiny_state):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(cg.ClipWeightsError, match="neither a TorchScript archive"):
        cg.load_clip(text)
    with pytest.raises(cg.ClipWeightsError, match="no such file"):
        cg.load_clip(tmp_path / "missing.pt")
    vit_like = tmp_path / "vit.pt"
    torch.save({"visual.proj": torch.zeros(2, 2), "visual.conv1.weight": torch.zeros(1)}, vit_like)
    with pytest.raises(cg.ClipWeightsError, match="not an OpenAI CLIP ResNet"):
        cg.load_clip(vit_like)
    broken = dict(tiny_state)
    broken["visual.layer1.0.conv2.weight"] = torch.zeros(3, 3)
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(cg.ClipWeightsError, match="could not build"):
        cg.load_clip(tmp_path / "broken.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(cg.ClipWeightsError, match="dict of tensors"):
        cg.load_clip(tmp_path / "list.pt")


def test_offline_default_says_where_to_put_rn50(monkeypatch, tmp_path):
    def offline(url, cache_dir=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("open_clip.pretrained.download_pretrained_from_url", offline)  # the download the loader calls
    with pytest.raises(cg.ClipWeightsError) as info:
        cg.load_clip(None, cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "RN50.pt") in message and "--clip-weights" in message and "RN50.pt" in message


# ---------------------------------------------------------------------------------------------------------
# Golden values measured with the released generate_cam_*.py (run in /tmp with shims, same random weights)
# ---------------------------------------------------------------------------------------------------------
def _check_golden(name: str, atol: float, precision: str = "fp32") -> None:
    golden = torch.load(GOLDEN / name, map_location="cpu", weights_only=True)
    state = cg.random_clip_state_dict(golden["seed"], **golden["clip_config"])
    checksum = sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point())
    # torch.randn rounds differently under another kernel set (ATEN_CPU_CAPABILITY=default: 6e-9 relative);
    # another generator would change the weights entirely
    check_deviation(f"{name} weights checksum (relative)", abs(checksum / golden["state_checksum"] - 1), 1e-6,
                    "random_clip_state_dict no longer gives the weights the golden values were measured with")
    model = cg.build_clip_from_state_dict(state, precision=precision)
    for benchmark in ("pascal", "coco"):
        rows = [i for i, b in enumerate(golden["benchmark"]) if b == benchmark]
        if not rows:
            continue
        images = [Image.open(io.BytesIO(golden["images"][golden["image"][i]].numpy().tobytes())) for i in rows]
        classes = [golden["class_idx"][i] for i in rows]
        ours = cg.compute_cams(model, images, classes, CLASS_NAMES[benchmark], cam_size=golden["cam_size"])
        expected = golden["cams"][rows]
        assert (expected.amax(dim=(1, 2)) > 0.5).all(), "golden maps should be non-trivial"
        check_close(f"{name} {benchmark} CAMs", ours, expected, atol)


@pytest.mark.golden
def test_golden_released_tiny():
    """A small random CLIP: released pipeline's files for synthetic PASCAL and COCO pairs."""
    _check_golden("cam_released_tiny.pt", atol=2e-3)  # 10x the worst deviation measured (docs/testing.md)


@pytest.mark.golden
@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="float16 on the scalar CPU kernels (ATEN_CPU_CAPABILITY=default) rounds otherwise: the "
                           "maps are 0.011-0.020 (mean) and up to 0.13 from the golden, as far as fp32 maps are, so "
                           "the golden cannot tell fp16 from fp32 there (AVX2 and AVX-512: 0 measured)")
def test_golden_released_tiny_fp16():
    """--precision fp16: CLIP's float16 weights, the model OpenAI's clip.load(jit=False) gives on a GPU (how the
    authors' CAMs were made); golden values from the released procedure with that model, run on the CPU."""
    _check_golden("cam_released_tiny_fp16.pt", atol=1e-3, precision="fp16")


def test_fp16_model_keeps_openai_dtypes(tiny_state):
    model = cg.build_clip_from_state_dict(tiny_state, precision="fp16")
    assert model.visual.conv1.weight.dtype == torch.float16 and model.visual.bn1.weight.dtype == torch.float32
    assert cg.ClipGradCAM(model, PASCAL_CLASSES).precision == "fp16"
    assert cg.ClipGradCAM(cg.build_clip_from_state_dict(tiny_state), PASCAL_CLASSES).precision == "fp32"


@pytest.mark.slow
@pytest.mark.golden
def test_golden_released_rn50():
    """Real RN50 shapes (random weights): released pipeline's files for 3 synthetic pairs."""
    _check_golden("cam_released_rn50.pt", atol=1e-3)


@pytest.mark.cuda
def test_cuda_matches_cpu_and_amp_is_close(tiny_state, tiny_clip):
    from common.device import configure_tf32

    images, classes = _images(6, seed=11), [0, 5, 9, 14, 19, 2]
    cpu = cg.compute_cams(tiny_clip, images, classes, PASCAL_CLASSES)
    gpu_model = cg.build_clip_from_state_dict(tiny_state).to("cuda")
    allowed = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    configure_tf32(False)  # PyTorch lets cuDNN convolutions run in TF32 by default: 7e-3 off on an H200
    try:
        gpu = cg.compute_cams(gpu_model, images, classes, PASCAL_CLASSES)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.testing.assert_close(gpu, cpu, atol=1e-3, rtol=0)
    amp = cg.compute_cams(gpu_model, images, classes, PASCAL_CLASSES, amp=True)
    assert amp.dtype == torch.float32 and (amp - cpu).abs().mean() < 0.02
