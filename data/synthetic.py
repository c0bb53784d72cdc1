"""Synthetic few-shot segmentation benchmark in the real PASCAL-5i, COCO-20i and FSS-1000 on-disk layouts.

``make_benchmark(root)`` (or ``python -m data.synthetic ROOT``) writes a small benchmark that every loader,
CAM script, train and test run of this project can use offline, in the layouts the released code reads::

    ROOT/VOC2012/JPEGImages/{name}.jpg                 name like 2007_000123
    ROOT/VOC2012/SegmentationClassAug/{name}.png       'L' PNG: 0 background, 1..20 class, 255 boundary ring
    ROOT/splits/pascal/{trn,val}/fold{0..3}.txt        lines "{name}__{cc:02d}" (1-based class), "\\n"-ended
    ROOT/COCO2014/{train2014,val2014}/COCO_{split}_{id:012d}.jpg
    ROOT/COCO2014/annotations/{train2014,val2014}/COCO_{split}_{id:012d}.png   0 background, 1..80 class
    ROOT/COCO2014/annotations/instances_{train2014,val2014}.json            official COCO format
    ROOT/splits/coco/{trn,val}/fold{0..3}.pkl          dict with all 80 keys 0..79 -> ['train2014/NAME.jpg', ...]
    ROOT/FSS-1000/{class}/{1..10}.jpg                  class like toy_star_03; square images, one object
    ROOT/FSS-1000/{class}/{1..10}.png                  'L' PNG: 0 background, 255 object, soft edge (below)
    ROOT/splits/fss/{trn,val,test}.txt                 class names, not sorted; test.txt CRLF-ended as HSNet's
    ROOT/synthetic.json                                written last: what was generated (the "done" marker)

Split semantics follow HSNet: ``{split}/fold{f}.txt`` lists the (image, class) pairs of the five PASCAL classes
5f..5f+4 (0-based); a COCO ``{split}/fold{f}.pkl`` has non-empty lists only for the fold's classes (val: the 20
classes f, f+4, ..., f+76; trn: the other 60). An image is listed for every class whose visible area is at least
``LIST_MIN_FRACTION`` of the image (always for its primary class), like the real lists.

What is in an image: a cluttered background (smooth colour field, small grey-ish strokes and blobs, noise) and
1-3 objects: one of the image's *primary* class, which is what guarantees each class ``images_per_class``
images in each of trn and val, plus 0-2 distractors of other classes (fewer with ``max_distractors``). Each
class has its own appearance, derived from its index alone (:func:`class_style`): a hue/saturation/value, a
second colour, a texture (shading, stripes, checks, dots or rings with a class-specific frequency and angle)
and a shape family (triangle, box, hexagon, star, ellipse, cross, trefoil blob, heart); instances vary in
size, rotation, position, brightness and texture phase. Image sides are drawn independently from [min_size,
max_size] (never square unless min_size == max_size); a primary object covers 8-20% of its image (at least 60%
of it stays visible), a distractor 3-7%, so they survive downscaling to 1/8 resolution. Some COCO objects
(about one image in four) are crowds: a cluster of 2-3 small shapes of one class stored as an uncompressed-RLE
annotation with ``iscrowd=1``; all other COCO objects are single polygons. PASCAL and COCO images are separate
sets; trn and val images are disjoint.

FSS-1000: ``fss_classes`` (default 8/4/4) classes in trn/val/test, exactly ten images each (HSNet's sampler
draws the supports by the names 1..10), square images of ``max_size`` pixels (the real ones are 224x224) with
the class's object alone (no distractors, as in FSS-1000). Class indices 0, 1, ... in trn, val, test order give
the appearance (:func:`class_style`) and the name ``toy_{shape}_{index:02d}`` (underscores, as many real FSS-1000
names, so the CAM prompts' underscore rule is exercised). The masks' edge ring is grey: 200 just inside the
object and 100 just outside, so only HSNet's threshold at 128 recovers the object exactly.

COCO masks follow :data:`data.coco_masks.COCO_PAINT_ORDER` (the rule ``data.prepare`` applies to the real
annotations): ``ann["area"]`` is exactly the pixel count of ``annToMask(ann)``, and the JPEG is rendered in
the same order, so it shows the same layering.

PASCAL boundary rule: after painting (same order), every pixel whose 2x2 window (itself, right, below,
below-right; edge-replicated) holds a different label becomes 255 -- a one-pixel ring on every edge between
labels (object/background and object/object), in proportion to VOC's ~5 px rings on 500 px images.

Everything is a function of ``seed`` (each image has its own generator seeded by (seed, benchmark, split,
index)), so a seed gives byte-identical files with the same Pillow/libjpeg build.
"""
from __future__ import annotations

import colorsys
import json
import logging
import math
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from common.cli import ArgumentParser, run_cli
from common.constants import IGNORE_LABEL
from common.flags import add_flags
from common.io import prepare_output_folder
from data.benchmarks import (BENCHMARKS, COCO_CATEGORIES, FSS_DIR, FSS_IMAGES_PER_CLASS, FSS_SPLIT_CLASSES,
                             NFOLDS, PASCAL_CLASSES, fold_classes)
from data.coco_masks import COCO_PAINT_ORDER
from data.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["ClassStyle", "class_style", "make_benchmark", "main"]

class SyntheticRootError(DataError, FileExistsError):
    """The output folder holds data this generator did not make."""


MARKER = "synthetic.json"
INCOMPLETE_MARKER = ".synthetic-incomplete"
FORMAT_VERSION = 1
JPEG_QUALITY = 90
LIST_MIN_FRACTION = 0.03  # a class is listed for an image when it covers >= 3% of it
PRIMARY_MIN_VISIBLE = 0.6  # the primary object keeps >= 60% of its own area visible
PRIMARY_AREA = (0.08, 0.2)  # fraction of the image an object covers (before occlusion)
DISTRACTOR_AREA = (0.03, 0.07)
MAX_DISTRACTORS = 2  # objects of other classes per image: 0, 1 or 2 (30/40/30%), capped by max_distractors

PYCOCOTOOLS_NUMPY2_WARNING = r"__array__ implementation doesn't accept a copy keyword"
FSS_CLASSES = (8, 4, 4)  # default trn, val, test classes of the FSS-1000 layout
FSS_EDGE_LEVELS = (100, 200)  # grey level of a mask's edge ring outside / inside the object (binarised at 128)
_BENCH_CODE = {"pascal": 1, "coco": 2, "fss": 3}
_SPLIT_CODE = {"trn": 1, "val": 2, "test": 3}
_COCO_SPLIT_DIR = {"trn": "train2014", "val": "val2014"}
_SHAPES = ("triangle", "box", "hexagon", "star", "ellipse", "cross", "trefoil", "heart")
_TEXTURES = ("shade", "stripes", "checks", "dots", "rings")


# ----------------------------------------------------------------------------------------------------------
# Class appearance
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassStyle:
    """Appearance of one class: colours in [0, 1] RGB, a shape family and a texture."""

    color: tuple[float, float, float]
    color2: tuple[float, float, float]
    shape: str
    texture: str
    frequency: float  # texture cycles per object radius
    angle: float  # texture orientation in radians
    aspect: float  # shape aspect ratio (y scale), in (0.55, 1]


def class_style(class_idx: int) -> ClassStyle:
    """Deterministic appearance of the 0-based class ``class_idx`` (the same for PASCAL and COCO indices)."""
    c = class_idx
    hue = (c * 0.6180339887) % 1.0
    sat = 0.55 + 0.4 * ((c * 0.3772) % 1.0)
    val = 0.65 + 0.3 * ((c * 0.7548) % 1.0)
    color = colorsys.hsv_to_rgb(hue, sat, val)
    color2 = colorsys.hsv_to_rgb((hue + 0.07 * (1 + c % 3)) % 1.0, 0.6 * sat, 0.35 * val + 0.1 * (c % 2))
    return ClassStyle(
        color=color,
        color2=color2,
        shape=_SHAPES[(c + c // 8) % len(_SHAPES)],
        texture=_TEXTURES[(c // 8 + 3 * c) % len(_TEXTURES)],
        frequency=1.5 + 0.5 * (c % 4),
        angle=math.pi * ((c * 0.381966) % 1.0),
        aspect=1.0 - 0.4 * ((c * 0.2137) % 1.0),
    )


def _unit_outline(shape: str, aspect: float) -> np.ndarray:
    """Outline of a shape family as (N, 2) (x, y) points inside the unit disc, centred at the origin."""
    if shape == "triangle":
        t = np.pi / 2 + 2 * np.pi * np.arange(3) / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "box":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) / math.sqrt(2)
    elif shape == "hexagon":
        t = 2 * np.pi * np.arange(6) / 6
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "star":
        t = np.pi / 2 + np.pi * np.arange(10) / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.48)
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "ellipse":
        t = 2 * np.pi * np.arange(28) / 28
        pts = np.stack([np.cos(t), 0.6 * np.sin(t)], 1)
    elif shape == "cross":
        a, b = 1.0 / math.sqrt(1 + 0.35**2), 0.35 / math.sqrt(1 + 0.35**2)
        pts = np.array([[b, a], [b, b], [a, b], [a, -b], [b, -b], [b, -a],
                        [-b, -a], [-b, -b], [-a, -b], [-a, b], [-b, b], [-b, a]], float)
    elif shape == "trefoil":
        t = 2 * np.pi * np.arange(36) / 36
        r = (1 + 0.3 * np.cos(3 * t)) / 1.3
        pts = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    elif shape == "heart":
        t = 2 * np.pi * np.arange(32) / 32
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y + 2.5], 1) / 17.5
    else:  # pragma: no cover - guarded by _SHAPES
        raise ValueError(shape)
    pts = pts * np.array([1.0, aspect])
    return pts / max(1.0, float(np.linalg.norm(pts, axis=1).max()))


# ----------------------------------------------------------------------------------------------------------
# Rasterising and painting
# ----------------------------------------------------------------------------------------------------------
def _polygon_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (flat [x0, y0, x1, y1, ...] lists) exactly as pycocotools does -> (H, W) uint8."""
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def _uncompressed_rle(binary: np.ndarray) -> dict[str, Any]:
    """(H, W) {0, 1} mask -> COCO uncompressed RLE {"counts": [...], "size": [H, W]} (column-major runs)."""
    flat = binary.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(x) for x in counts], "size": [int(binary.shape[0]), int(binary.shape[1])]}


def _texture(style: ClassStyle, u: np.ndarray, v: np.ndarray, phase: float) -> np.ndarray:
    """Mixing weight in [0, 1] of the second colour at object-frame coordinates (u, v) (units of radius)."""
    f = style.frequency
    ca, sa = math.cos(style.angle), math.sin(style.angle)
    s, t = ca * u + sa * v, -sa * u + ca * v
    if style.texture == "shade":
        return np.clip(0.5 * (s + 1.0), 0.0, 1.0) * 0.6
    if style.texture == "stripes":
        return (np.sin(np.pi * f * s + phase) > 0).astype(np.float32)
    if style.texture == "checks":
        return (np.sin(np.pi * f * s + phase) * np.sin(np.pi * f * t + phase) > 0).astype(np.float32)
    if style.texture == "dots":
        fs, ft = (f * s + phase) % 1.0 - 0.5, (f * t + phase) % 1.0 - 0.5
        return (fs * fs + ft * ft < 0.09).astype(np.float32)
    if style.texture == "rings":
        return (np.sin(2 * np.pi * f * np.sqrt(s * s + t * t) + phase) > 0).astype(np.float32)
    raise ValueError(style.texture)  # pragma: no cover


@dataclass
class _Object:
    label: int  # 1-based contiguous class label
    mask: np.ndarray  # (H, W) uint8 {0, 1}
    area: int
    polygons: list[list[float]]  # empty for crowds
    crowd: bool
    parts: list[tuple[float, float, float, float]]  # (cx, cy, radius, rotation) per drawn shape


def _place_shape(rng: np.random.Generator, style: ClassStyle, radius: float, height: int, width: int,
                 center: tuple[float, float] | None = None) -> tuple[list[float], tuple[float, float, float, float]]:
    """One shape instance as a flat polygon (2-decimal floats, fully inside the image) and its frame."""
    rot = float(rng.uniform(0, 2 * np.pi))
    lo_x, hi_x = radius + 1, width - radius - 1
    lo_y, hi_y = radius + 1, height - radius - 1
    if center is None:
        cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
    else:
        cx, cy = float(np.clip(center[0], lo_x, hi_x)), float(np.clip(center[1], lo_y, hi_y))
    pts = _unit_outline(style.shape, style.aspect)
    rmat = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
    pts = pts @ rmat.T * radius + np.array([cx, cy])
    flat = [round(float(x), 2) for x in pts.reshape(-1)]
    return flat, (cx, cy, radius, rot)


def _polygon_area(pts: np.ndarray) -> float:
    """Shoelace area of an (N, 2) closed outline."""
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _make_object(rng: np.random.Generator, class_idx: int, area_fraction: float, height: int, width: int,
                 crowd: bool) -> _Object:
    """An object of ``class_idx`` covering about ``area_fraction`` of the image (a crowd: 2-3 smaller parts)."""
    style = class_style(class_idx)
    unit_area = _polygon_area(_unit_outline(style.shape, style.aspect))
    short = min(height, width)

    def radius_for(fraction: float) -> float:
        return min(math.sqrt(fraction * height * width / unit_area), 0.45 * short)

    if not crowd:
        poly, part = _place_shape(rng, style, radius_for(area_fraction), height, width)
        polygons, parts = [poly], [part]
    else:  # a cluster of 2-3 small instances of the class, stored as one RLE annotation
        n = int(rng.integers(2, 4))
        small = radius_for(area_fraction / n)
        centre = (float(rng.uniform(small, width - small)), float(rng.uniform(small, height - small)))
        polygons, parts = [], []
        for _ in range(n):
            offset = rng.uniform(-1.1, 1.1, size=2) * small
            poly, part = _place_shape(rng, style, small * float(rng.uniform(0.85, 1.0)), height, width,
                                      center=(centre[0] + offset[0], centre[1] + offset[1]))
            polygons.append(poly)
            parts.append(part)
    mask = _polygon_mask(polygons, height, width)
    return _Object(label=class_idx + 1, mask=mask, area=int(mask.sum()),
                   polygons=[] if crowd else polygons, crowd=crowd, parts=parts)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Cluttered background -> (H, W, 3) float32 in [0, 255]."""
    gh, gw = int(rng.integers(2, 5)), int(rng.integers(2, 5))
    base = rng.uniform(50, 200)
    grid = base + rng.normal(0, 35, size=(gh, gw, 1)) + rng.normal(0, 14, size=(gh, gw, 3))
    grid = np.clip(grid, 0, 255).astype(np.uint8)
    img = Image.fromarray(grid, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    short = min(height, width)
    for _ in range(int(rng.integers(4, 11))):
        g = float(rng.uniform(30, 230))
        col = tuple(int(np.clip(g + rng.normal(0, 12), 0, 255)) for _ in range(3))
        x0, y0 = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        size = float(rng.uniform(0.04, 0.16)) * short
        kind = int(rng.integers(0, 3))
        if kind == 0:
            ang = float(rng.uniform(0, 2 * np.pi))
            x1, y1 = x0 + 3 * size * math.cos(ang), y0 + 3 * size * math.sin(ang)
            draw.line([(x0, y0), (x1, y1)], fill=col, width=int(rng.integers(1, 4)))
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + size, y0 + size * float(rng.uniform(0.3, 1.0))], fill=col)
        else:
            draw.ellipse([x0, y0, x0 + size, y0 + size], fill=col)
    return np.asarray(img, dtype=np.float32)


def _render(rng: np.random.Generator, canvas: np.ndarray, obj: _Object) -> None:
    """Paint ``obj``'s textured pixels onto ``canvas`` (H, W, 3) float32, in place (a private buffer)."""
    style = class_style(obj.label - 1)
    gain = float(rng.uniform(0.85, 1.15))
    phase = float(rng.uniform(0, 2 * np.pi))
    c1 = np.array(style.color, np.float32) * 255 * gain
    c2 = np.array(style.color2, np.float32) * 255 * gain
    ys, xs = np.nonzero(obj.mask)
    # Object-frame coordinates of the painted pixels, relative to the nearest part's centre and rotation.
    best, u, v = np.full(xs.shape, np.inf), np.zeros(xs.shape), np.zeros(xs.shape)
    for cx, cy, radius, rot in obj.parts:
        dx, dy = (xs + 0.5 - cx) / radius, (ys + 0.5 - cy) / radius
        pu = math.cos(rot) * dx + math.sin(rot) * dy
        pv = -math.sin(rot) * dx + math.cos(rot) * dy
        dist = dx * dx + dy * dy
        take = dist < best  # the first part wins a tie
        best, u, v = np.where(take, dist, best), np.where(take, pu, u), np.where(take, pv, v)
    w = _texture(style, u, v, phase)[:, None]
    canvas[ys, xs] = np.clip((1 - w) * c1 + w * c2, 0, 255)


def _boundary_ring(labels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels whose 2x2 window (itself, right, below, below-right; edge-replicated) holds another
    label -- a one-pixel ring on every label edge."""
    pad = np.pad(labels, ((0, 1), (0, 1)), mode="edge")
    h, w = labels.shape
    ring = np.zeros((h, w), bool)
    for dy in (0, 1):
        for dx in (0, 1):
            ring |= pad[dy:dy + h, dx:dx + w] != labels
    return ring


@dataclass
class _Sample:
    image: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8, painted class labels (no boundary)
    objects: list[_Object]  # in paint order


def _listed_classes(mask: np.ndarray, primary: int) -> list[int]:
    """0-based classes an image is listed under: its primary class, then every class (label 1..n) that covers
    at least LIST_MIN_FRACTION of the final mask (boundary pixels excluded)."""
    counts = np.bincount(mask.ravel(), minlength=256)
    labels = np.flatnonzero(counts[1:IGNORE_LABEL] >= LIST_MIN_FRACTION * mask.size) + 1
    return [primary] + [int(c) - 1 for c in labels if c != primary + 1]


def _make_sample(rng: np.random.Generator, primary: int, nclass: int, min_size: int, max_size: int,
                 allow_crowd: bool, max_distractors: int = MAX_DISTRACTORS,
                 distractor_pool: Optional[Sequence[int]] = None) -> _Sample:
    """One image with its primary class ``primary`` (0-based) and 0..``max_distractors`` distractors drawn
    from ``distractor_pool`` (default: every class 0..nclass-1)."""
    width = int(rng.integers(min_size, max_size + 1))
    height = int(rng.integers(min_size, max_size + 1))
    if width == height and min_size < max_size:
        height = height - 1 if height > min_size else height + 1
    # drawn, then capped: the default cap leaves every image as it was before the cap existed
    n_distract = min(int(rng.choice(3, p=[0.3, 0.4, 0.3])), max_distractors)
    others = [c for c in (range(nclass) if distractor_pool is None else distractor_pool) if c != primary]
    distract = [int(c) for c in rng.choice(others, size=n_distract, replace=False)]
    crowd_slot = 0 if (allow_crowd and n_distract and rng.random() < 0.45) else -1
    for _attempt in range(50):
        objects = [_make_object(rng, primary, float(rng.uniform(*PRIMARY_AREA)), height, width, False)]
        for k, c in enumerate(distract):
            objects.append(_make_object(rng, c, float(rng.uniform(*DISTRACTOR_AREA)), height, width,
                                        crowd=(k == crowd_slot)))
        # annotation id order == list order; paint larger first, ties by position (COCO_PAINT_ORDER)
        order = sorted(range(len(objects)), key=lambda i: (-objects[i].area, i))
        objects = [objects[i] for i in order]
        labels = np.zeros((height, width), np.uint8)
        for obj in objects:
            labels[obj.mask > 0] = obj.label
        prim = next(o for o in objects if o.label == primary + 1)
        visible = int(((labels == prim.label) & (prim.mask > 0)).sum())
        if visible >= PRIMARY_MIN_VISIBLE * prim.area:
            break
    else:  # pragma: no cover - extremely unlikely; keep the primary only
        objects, labels = [prim], (prim.mask * prim.label).astype(np.uint8)
    canvas = _background(rng, height, width)
    for obj in objects:
        _render(rng, canvas, obj)
    canvas += rng.normal(0, 5, size=canvas.shape).astype(np.float32)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return _Sample(image=image, labels=labels, objects=objects)


def render_image(rng: np.random.Generator, primary: int, classes: Sequence[int], *,
                 max_distractors: int = MAX_DISTRACTORS, min_size: int = 64,
                 max_size: int = 112) -> tuple[np.ndarray, list[int]]:
    """A fresh image drawn as the benchmark draws its images, with every object's class in ``classes``.

    For work beside the benchmark (the demo's backbone pretraining renders images of the training classes
    only, never the benchmark's files). ``primary`` (0-based, in ``classes``) is the largest object; up to
    ``max_distractors`` objects of other classes of ``classes`` are added. Returns the (H, W, 3) uint8 image
    and the classes it is listed under (the primary first, then those covering >= LIST_MIN_FRACTION).
    """
    if primary not in classes:
        raise ValueError(f"primary class {primary} is not among the classes {list(classes)}")
    sample = _make_sample(rng, primary, max(classes) + 1, min_size, max_size, allow_crowd=False,
                          max_distractors=max_distractors, distractor_pool=list(classes))
    return sample.image, _listed_classes(sample.labels, primary)


# ----------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------
def _rng(seed: int, bench: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _BENCH_CODE[bench], _SPLIT_CODE[split], index])


def _split_samples(seed: int, bench: str, split: str, nclass: int, ipc: int, min_size: int, max_size: int,
                   crowd: bool, max_distractors: int) -> Iterator[tuple[int, _Sample]]:
    """The samples of one split, ``ipc`` per primary class in class order: yields (primary class, sample)."""
    index = 0
    for cls in range(nclass):
        for _ in range(ipc):
            yield cls, _make_sample(_rng(seed, bench, split, index), cls, nclass, min_size, max_size, crowd,
                                    max_distractors)
            index += 1


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    Image.fromarray(image, "RGB").save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=2)


def _save_png(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(mask.astype(np.uint8), "L").save(path, format="PNG")


def _pascal(root: Path, seed: int, ipc: int, min_size: int, max_size: int,
            max_distractors: int = MAX_DISTRACTORS) -> dict[str, Any]:
    nclass = len(PASCAL_CLASSES)
    img_dir = root / "VOC2012" / "JPEGImages"
    ann_dir = root / "VOC2012" / "SegmentationClassAug"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    serial = 0
    for split in ("trn", "val"):
        pairs: list[tuple[str, int]] = []
        for cls, sample in _split_samples(seed, "pascal", split, nclass, ipc, min_size, max_size, False,
                                          max_distractors):
            serial += 1
            name = f"{2007 + serial % 6}_{serial:06d}"
            mask = sample.labels.copy()
            mask[_boundary_ring(sample.labels)] = IGNORE_LABEL
            _save_jpeg(sample.image, img_dir / f"{name}.jpg")
            _save_png(mask, ann_dir / f"{name}.png")
            pairs += [(name, c) for c in _listed_classes(mask, cls)]
        split_dir = root / "splits" / "pascal" / split
        split_dir.mkdir(parents=True, exist_ok=True)
        per_fold = []
        for fold in range(NFOLDS):
            classes = fold_classes("pascal", fold)
            lines = sorted((c, n) for n, c in pairs if c in classes)
            (split_dir / f"fold{fold}.txt").write_text("".join(f"{n}__{c + 1:02d}\n" for c, n in lines))
            per_fold.append(len(lines))
        counts[split] = {"images": nclass * ipc, "pairs_per_fold": per_fold}
    return counts


def _coco(root: Path, seed: int, ipc: int, min_size: int, max_size: int,
          max_distractors: int = MAX_DISTRACTORS) -> dict[str, Any]:
    nclass = len(COCO_CATEGORIES)
    base = root / "COCO2014"
    categories = [{"supercategory": sup, "id": cid, "name": name} for cid, name, sup in COCO_CATEGORIES]
    counts: dict[str, Any] = {}
    image_id = 0
    ann_id = 0
    for split in ("trn", "val"):
        sdir = _COCO_SPLIT_DIR[split]
        (base / sdir).mkdir(parents=True, exist_ok=True)
        (base / "annotations" / sdir).mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        classwise: dict[int, list[str]] = {c: [] for c in range(nclass)}
        for cls, sample in _split_samples(seed, "coco", split, nclass, ipc, min_size, max_size, True,
                                          max_distractors):
            image_id += 1
            fname = f"COCO_{sdir}_{image_id:012d}.jpg"
            h, w = sample.labels.shape
            # Annotation ids follow paint order, so (-area, id) reproduces it even on equal areas.
            for obj in sample.objects:
                ann_id += 1
                rle = mask_utils.encode(np.asfortranarray(obj.mask))
                annotations.append({
                    "segmentation": _uncompressed_rle(obj.mask) if obj.crowd else obj.polygons,
                    "area": float(obj.area),
                    "iscrowd": int(obj.crowd),
                    "image_id": image_id,
                    "bbox": [round(float(x), 2) for x in mask_utils.toBbox(rle)],
                    "category_id": COCO_CATEGORIES[obj.label - 1][0],
                    "id": ann_id,
                })
            images.append({"license": 1, "file_name": fname, "coco_url": "", "height": h, "width": w,
                           "date_captured": "2014-01-01 00:00:00", "flickr_url": "", "id": image_id})
            _save_jpeg(sample.image, base / sdir / fname)
            _save_png(sample.labels, base / "annotations" / sdir / fname.replace(".jpg", ".png"))
            for c in _listed_classes(sample.labels, cls):
                classwise[c].append(f"{sdir}/{fname}")
        instances = {
            "info": {"description": "Synthetic COCO-20i stand-in made by data.synthetic", "version": "1.0",
                     "year": 2014, "contributor": "data.synthetic", "date_created": "", "seed": seed},
            "licenses": [{"url": "", "id": 1, "name": "synthetic data, no license restrictions"}],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (base / "annotations" / f"instances_{sdir}.json").write_text(json.dumps(instances, separators=(",", ":")))
        split_dir = root / "splits" / "coco" / split
        split_dir.mkdir(parents=True, exist_ok=True)
        for fold in range(NFOLDS):
            val_classes = set(fold_classes("coco", fold))
            keep = val_classes if split == "val" else set(range(nclass)) - val_classes
            fold_dict = {c: (sorted(classwise[c]) if c in keep else []) for c in range(nclass)}
            with open(split_dir / f"fold{fold}.pkl", "wb") as f:
                pickle.dump(fold_dict, f, protocol=3)
        counts[split] = {"images": nclass * ipc, "annotations": len(annotations),
                         "crowd_annotations": sum(a["iscrowd"] for a in annotations)}
    return counts


def fss_class_name(class_idx: int) -> str:
    """The synthetic FSS-1000 class folder name of class index ``class_idx`` (``toy_{shape}_{index:02d}``)."""
    return f"toy_{class_style(class_idx).shape}_{class_idx:02d}"


def _fss_mask(labels: np.ndarray) -> np.ndarray:
    """Object labels (H, W) -> 'L' mask: 255 object, 0 background, the edge ring at :data:`FSS_EDGE_LEVELS`."""
    inside = labels > 0
    ring = _boundary_ring(labels)
    mask = np.where(inside, 255, 0).astype(np.uint8)
    mask[ring & ~inside], mask[ring & inside] = FSS_EDGE_LEVELS
    return mask


def _fss(root: Path, seed: int, side: int, split_classes: Sequence[int]) -> dict[str, Any]:
    nclass = sum(split_classes)
    counts: dict[str, Any] = {}
    split_dir = root / "splits" / "fss"
    split_dir.mkdir(parents=True, exist_ok=True)
    class_idx = 0
    for split, n in zip(FSS_SPLIT_CLASSES, split_classes):
        names = []
        for _ in range(n):
            name = fss_class_name(class_idx)
            folder = root / FSS_DIR / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(1, FSS_IMAGES_PER_CLASS + 1):
                rng = _rng(seed, "fss", split, class_idx * FSS_IMAGES_PER_CLASS + k)
                sample = _make_sample(rng, class_idx, nclass, side, side, False, max_distractors=0)
                _save_jpeg(sample.image, folder / f"{k}.jpg")
                _save_png(_fss_mask(sample.labels), folder / f"{k}.png")
            names.append(name)
            class_idx += 1
        newline = "\r\n" if split == "test" else "\n"  # as HSNet's files: test.txt is CRLF-ended
        # unsorted, like HSNet's lists (the datasets sort them)
        (split_dir / f"{split}.txt").write_bytes("".join(f"{x}{newline}" for x in reversed(names)).encode())
        counts[split] = {"classes": n, "images": n * FSS_IMAGES_PER_CLASS}
    return counts


def _checked_fss_classes(counts: Sequence[int]) -> tuple[int, ...]:
    """``counts`` as a (trn, val, test) tuple; ValueError unless each is in 1..HSNet's count for the split."""
    counts = tuple(int(n) for n in counts)
    caps = tuple(FSS_SPLIT_CLASSES.values())
    if len(counts) != len(caps) or not all(1 <= n <= cap for n, cap in zip(counts, caps)):
        raise ValueError(f"fss_classes must be 3 counts (trn, val, test) of at most {caps}, each >= 1; got {counts}")
    return counts


def _prepare_root(root: Path) -> None:
    """Refuse to write over data this generator did not make; clear a previous synthetic tree."""
    owned = (root / MARKER).exists() or (root / INCOMPLETE_MARKER).exists()
    targets = [root / "VOC2012", root / "COCO2014", root / FSS_DIR, root / "splits"]
    present = [p for p in targets if p.exists()]
    if present and not owned:
        raise SyntheticRootError(
            f"{root} already holds {', '.join(p.name for p in present)} not made by data.synthetic "
            f"(no {MARKER}); choose an empty folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / INCOMPLETE_MARKER).write_text("generation started; delete this folder if it stays\n")
    (root / MARKER).unlink(missing_ok=True)
    for p in present:
        shutil.rmtree(p)


def make_benchmark(root: Path, *, seed: int = 0, images_per_class: int = 6, min_size: int = 64,
                   max_size: int = 112, benchmarks: Sequence[str] = BENCHMARKS,
                   max_distractors: int = MAX_DISTRACTORS, fss_classes: Sequence[int] = FSS_CLASSES) -> Path:
    """Write a synthetic few-shot benchmark under ``root`` (see the module docstring) and return ``root``.

    Args:
        root: output folder; created if missing. If it holds a previous synthetic tree, that tree is replaced;
            if it holds other data in ``VOC2012``, ``COCO2014`` or ``splits``, ``FileExistsError`` is raised.
        seed: everything is a function of it.
        images_per_class: images whose primary class is c, per class and per split (trn and val). 5-shot
            episodes need >= 6 (a query and five distinct supports).
        min_size, max_size: bounds of each image side in pixels.
        benchmarks: any of "pascal", "coco", "fss".
        max_distractors: at most this many distractor objects per image (0, 1 or 2). The count is drawn from
            {0: 30%, 1: 40%, 2: 30%} and capped, so 0 gives one object per image (an easier task, used by the
            demo when the backbone and CLIP are random). FSS-1000 images never have distractors.
        fss_classes: classes in the FSS-1000 trn, val and test lists (each class has ten images, whatever
            ``images_per_class``; the images are ``max_size`` pixels square).
    Returns:
        ``root`` as a Path; ``root/synthetic.json`` exists only once everything is written.
    """
    root = Path(root)
    benchmarks = tuple(dict.fromkeys(benchmarks))
    unknown = [b for b in benchmarks if b not in BENCHMARKS]
    if unknown or not benchmarks:
        raise ValueError(f"benchmarks must be a non-empty subset of {BENCHMARKS}, got {list(benchmarks)}")
    if images_per_class < 2:
        raise ValueError("images_per_class must be >= 2 (a query and a distinct support)")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")
    if not 0 <= max_distractors <= MAX_DISTRACTORS:
        raise ValueError(f"max_distractors must be in 0..{MAX_DISTRACTORS}, got {max_distractors}")
    fss_classes = _checked_fss_classes(fss_classes)
    start = time.perf_counter()
    _prepare_root(root)
    counts: dict[str, Any] = {}
    with warnings.catch_warnings():
        # pycocotools' decode wrapper trips numpy 2's __array__(copy=...) deprecation; harmless here
        warnings.filterwarnings("ignore", message=PYCOCOTOOLS_NUMPY2_WARNING, category=DeprecationWarning)
        if "pascal" in benchmarks:
            counts["pascal"] = _pascal(root, seed, images_per_class, min_size, max_size, max_distractors)
        if "coco" in benchmarks:
            counts["coco"] = _coco(root, seed, images_per_class, min_size, max_size, max_distractors)
        if "fss" in benchmarks:
            counts["fss"] = _fss(root, seed, max_size, fss_classes)
    summary = {
        "generator": "data.synthetic",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "images_per_class": images_per_class,
        "min_size": min_size,
        "max_size": max_size,
        "max_distractors": max_distractors,
        "benchmarks": list(benchmarks),
        "counts": counts,
        "coco_paint_order": COCO_PAINT_ORDER,
    }
    if "fss" in benchmarks:
        summary["fss_classes"] = list(fss_classes)
    (root / MARKER).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (root / INCOMPLETE_MARKER).unlink()
    logger.info("synthetic benchmark written to %s in %.1fs", root, time.perf_counter() - start)
    return root


def build_parser() -> ArgumentParser:
    """Flags of ``python -m data.synthetic``."""
    parser = ArgumentParser(prog="python -m data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="output folder (the --datapath of train.py/test.py)")
    add_flags(parser, "synthetic", "--seed", "--images-per-class")
    parser.add_argument("--min-size", type=int, default=64, help="smallest image side in pixels")
    parser.add_argument("--max-size", type=int, default=112, help="largest image side in pixels")
    add_flags(parser, "synthetic", "--benchmark", "--max-distractors", benchmarks=BENCHMARKS,
              all_benchmarks=list(BENCHMARKS), max_distractors=MAX_DISTRACTORS,
              distractor_counts=range(MAX_DISTRACTORS + 1))
    parser.add_argument("--fss-classes", type=int, nargs=3, default=list(FSS_CLASSES), metavar=("TRN", "VAL", "TEST"),
                        help="classes in the FSS-1000 trn, val and test lists (ten images each)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m data.synthetic ROOT [--seed S] [--images-per-class N] [--min-size A] [--max-size B]
    [--benchmark pascal coco fss] [--max-distractors N] [--fss-classes TRN VAL TEST]``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images_per_class < 2:
        parser.error("argument --images-per-class: must be >= 2 (a query and a distinct support)")
    if not 32 <= args.min_size <= args.max_size:
        parser.error(f"arguments --min-size/--max-size: need 32 <= min <= max, got {args.min_size}, {args.max_size}")
    try:
        _checked_fss_classes(args.fss_classes)
    except ValueError as err:
        parser.error(f"argument --fss-classes: {err}")

    def write() -> None:
        start = time.perf_counter()
        prepare_output_folder(args.root, "ROOT")
        make_benchmark(args.root, seed=args.seed, images_per_class=args.images_per_class,
                       min_size=args.min_size, max_size=args.max_size, benchmarks=args.benchmark,
                       max_distractors=args.max_distractors, fss_classes=args.fss_classes)
        summary = json.loads((args.root / MARKER).read_text())
        print(f"wrote {', '.join(args.benchmark)} to {args.root} in {time.perf_counter() - start:.1f}s: "
              f"{json.dumps(summary['counts'])}")

    return run_cli(write, "python -m data.synthetic")


if __name__ == "__main__":
    raise SystemExit(main())
