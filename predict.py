"""Segment a class in your own images from its label text, with a trained IMR-HSNet.

    python predict.py --load logs/my_run.log/best_model.pt --backbone resnet50 --clip-weights RN50.pt \\
        --class-name zebra --support a.jpg b.jpg --query q1.jpg q2.jpg --out predictions/

No dataset, split lists or CAM files: the CLIP Grad-CAM priors are computed on the fly (the code of the
generate_cam scripts) and the K supports vote as in ``test.py``. A folder may be given instead of files (its
images, by extension, in sorted order). Writes into ``--out``, per query ``<stem>_mask.png`` (0/255 at the
query's resolution) and ``<stem>_overlay.png`` (image | CAM prior | final mask), with ``--probability`` also
``<stem>_probability.png`` (the foreground probability, 0..255), per support ``support_<stem>_mask.png`` (its
refined mask), and ``predict.json`` (arguments, prompts, how the class name was read, files written). A common
other name of a vocabulary's class is read as that class (``airplane`` -> PASCAL's ``aeroplane``); a name new
to the vocabulary is scored beside its classes, with a warning.
Images are used upright, as their EXIF orientation says (as image viewers show them).
See :mod:`apps.predictor` for the Python API and the choices behind it.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from common.cli import ArgumentParser, run_cli
from common.console import ensure_console_logging
from common.errors import UserInputError
from common.flags import add_flags
from data.benchmarks import CLASS_NAMES
from model.backbone import BACKBONES
from priors.clip_weights import CLIP_PRECISION_CHOICES, random_clip_seed
from model.masking import MASKING_MODES

logger = logging.getLogger("predict")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
OVERLAY_MAX_SIDE = 512  # overlay tiles are shrunk so their longer side is at most this
OVERLAY_GAP = 4  # white pixels between the tiles


class PredictInputError(UserInputError, ValueError):
    """A bad input file or folder; the message names it."""


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``predict.py`` (names and help as in train.py / test.py where they exist)."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--class-name", dest="class_name", required=True,
                        help="label text of the class to segment, e.g. 'zebra' (prompt: 'a photo of a {class}')")
    inputs.add_argument("--support", nargs="+", required=True, metavar="PATH",
                        help="support images showing the class (files, or folders of images); K >= 1")
    inputs.add_argument("--query", nargs="+", required=True, metavar="PATH",
                        help="images to segment (files, or folders of images)")
    add_flags(inputs, "predict", "--out")
    inputs.add_argument("--vocabulary", default="pascal", choices=tuple(CLASS_NAMES),
                        help="class names the CAM softmax scores the class among; a common other name of one of them "
                             "(airplane, tv, couch ...) is read as it, a new name is added (with a warning)")
    inputs.add_argument("--probability", action="store_true",
                        help="also write <stem>_probability.png per query: the foreground probability as 0..255")

    model = parser.add_argument_group("model")
    add_flags(model, "predict", "--load", "--backbone", "--stage", "--img-size", "--masking", "--backbone-weights",
              "--clip-weights", "--device", "--precision", backbones=tuple(BACKBONES), maskings=tuple(MASKING_MODES),
              precisions=CLIP_PRECISION_CHOICES)
    return parser


def collect_images(paths: Sequence[str], flag: str) -> list[Path]:
    """Files named on the command line, folders expanded to their images (by extension, sorted).

    Raises PredictInputError for a missing path, a folder without images, or two inputs with the same
    stem (their outputs would overwrite each other). Whether a file really is an image is checked on reading.
    """
    found: list[Path] = []
    for value in paths:
        path = Path(value).expanduser()
        if path.is_dir():
            images = sorted(p for p in path.iterdir()
                            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise PredictInputError(f"{flag} {path}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise PredictInputError(f"{flag} {path}: no such file or folder")
    stems: dict[str, Path] = {}
    for path in found:
        if path.stem in stems:
            raise PredictInputError(f"{flag}: {stems[path.stem]} and {path} have the same name stem "
                                    f"{path.stem!r}; their outputs would collide")
        stems[path.stem] = path
    return found


def read_images(paths: Sequence[Path]) -> list[Any]:
    """PIL RGB images, turned upright by their EXIF orientation (phone photos), so masks match what an image
    viewer shows; a file that is not a readable image raises PredictInputError naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    images = []
    for path in paths:
        try:
            with Image.open(path) as img:
                images.append(ImageOps.exif_transpose(img).convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise PredictInputError(f"cannot read image {path}: {exc}") from exc
    return images


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def overlay_panel(image: Any, cam: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image | CAM prior (jet, blended) | predicted mask (red, blended), side by side: (h, 3w + 2 gap, 3) uint8.

    Args:
        image: the PIL RGB image (H, W); cam: (h, h) prior in [0, 1]; mask: (H, W) 0/1.
    Tiles are shrunk so that their longer side is at most ``OVERLAY_MAX_SIDE``.
    """
    import cv2
    from PIL import Image

    from common.vis import QUERY_COLOR, apply_mask

    scale = min(1.0, OVERLAY_MAX_SIDE / max(image.width, image.height))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))  # (w, h)
    rgb = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR))
    cam = np.clip(cv2.resize(np.float32(cam), size, interpolation=cv2.INTER_LINEAR), 0, 1)
    heat = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * cam), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    cam_tile = (0.5 * rgb + 0.5 * heat).astype(np.uint8)
    small_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    mask_tile = apply_mask(rgb, small_mask, QUERY_COLOR)
    gap = np.full((size[1], OVERLAY_GAP, 3), 255, np.uint8)
    return np.concatenate([rgb, gap, cam_tile, gap, mask_tile], axis=1)


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Segment ``args.class_name`` in the query images; returns what ``predict.json`` records."""
    from common.io import prepare_output_folder, remove_if_empty
    from apps.predictor import prompt_classes

    prompt_classes(args.class_name, args.vocabulary)  # an empty class name is refused before anything loads
    random_clip_seed(args.clip_weights)  # and a malformed random:SEED
    if args.stage < 1:
        raise PredictInputError(f"--stage must be >= 1, got {args.stage}")
    if args.img_size < 32:
        raise PredictInputError(f"--img-size must be >= 32, got {args.img_size}")
    out = Path(args.out).expanduser()
    created = prepare_output_folder(out, "--out")  # before any work
    try:
        return _predict(args, out)
    except UserInputError:
        if created:
            remove_if_empty(out)
        raise


def _predict(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    import torch

    from common.io import atomic_write_bytes, atomic_write_text
    from apps.predictor import Segmenter
    from priors.recipes.clip_gradcam import clip_dtype

    support_paths = collect_images(args.support, "--support")
    query_paths = collect_images(args.query, "--query")
    supports, queries = read_images(support_paths), read_images(query_paths)

    backbone_weights = None if str(args.backbone_weights).lower() == "none" else args.backbone_weights
    segmenter = Segmenter.from_checkpoint(args.load, args.backbone, clip_weights=args.clip_weights,
                                          backbone_weights=backbone_weights, device=args.device,
                                          img_size=args.img_size, stage=args.stage, masking=args.masking,
                                          vocabulary=args.vocabulary, clip_precision=args.precision)
    logger.info("Segmenting %r in %d queries with %d supports on %s", args.class_name, len(queries),
                len(supports), segmenter.device)
    result = segmenter.segment(supports, queries, args.class_name, probabilities=args.probability, progress=True)

    written = []
    for path, image, cam, mask in zip(query_paths, queries, result.query_cams, result.query_masks):
        written.append(atomic_write_bytes(_png(mask * np.uint8(255)), out / f"{path.stem}_mask.png"))
        written.append(atomic_write_bytes(_png(overlay_panel(image, cam, mask)), out / f"{path.stem}_overlay.png"))
        logger.info("%s: %.1f%% foreground", path, 100.0 * float(mask.mean()))
    for path, probability in zip(query_paths, result.query_probabilities):
        grey = np.clip(np.round(probability * 255.0), 0, 255).astype(np.uint8)
        written.append(atomic_write_bytes(_png(grey), out / f"{path.stem}_probability.png"))
    for path, mask in zip(support_paths, result.support_masks):
        written.append(atomic_write_bytes(_png(mask * np.uint8(255)), out / f"support_{path.stem}_mask.png"))
    match = result.class_match
    record = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "supports": [str(p) for p in support_paths], "queries": [str(p) for p in query_paths],
              "prompts": result.prompts, "class_index": result.class_index,
              "class": {"given": match.given, "prompt_name": match.name, "read_as": match.how,
                        "note": match.message()},
              "random_clip_weights": random_clip_seed(args.clip_weights) is not None,
              "clip_precision": "fp16" if clip_dtype(segmenter.clip_model) == torch.float16 else "fp32",
              "written": [str(p) for p in written]}
    atomic_write_text(json.dumps(record, indent=2) + "\n", out / "predict.json")
    logger.info("Wrote %d files to %s", len(written) + 1, out)
    return record


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Parse the flags and predict; bad input prints ``predict.py: error: ...`` naming the file, status 2."""
    args = build_parser().parse_args(argv)
    ensure_console_logging("%(message)s")
    return run_cli(lambda: main(args), "predict.py")


if __name__ == "__main__":
    sys.exit(cli())
