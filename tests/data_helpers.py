"""Helpers for the data tests: fake CAM priors for every listed (image, class) pair of a split folder, and the
shapes of the tiny random CLIPs that the CAM, prior, predict and demo tests use."""
from __future__ import annotations

from pathlib import Path

import torch

from data.cam_files import cam_path
from data.splits import read_coco_split, read_pascal_split

# Keyword arguments of priors.recipes.clip_gradcam.random_clip_state_dict for a CLIP ResNet small enough for CPU tests
# (the golden tests/golden/cam_released_tiny.pt values were measured with these shapes).
TINY_CLIP = dict(vision_width=8, vision_layers=(1, 1, 1, 1), embed_dim=256, text_width=64, text_layers=1)
# Of priors.recipes.clip_vit.random_clip_vit_state_dict: a small random CLIP ViT, 9 blocks (the CLIP-ES affinity takes
# the last 8), 2 heads, patch 16, 224 px (a 14x14 grid whose positional embedding is interpolated for other sizes);
# the golden tests/golden/clip_es_tiny.pt values were measured with these.
TINY_VIT = dict(width=128, layers=9, embed_dim=64, text_width=64, text_layers=1)


def write_fake_cams(split_root: Path, out: Path, *, size: int = 50, seed: int = 0) -> dict[str, Path]:
    """Random (size, size) float32 CAMs, released naming, for every pair of the PASCAL and COCO lists found
    under ``split_root``; returns the CAM roots ``{"pascal_trn", "pascal_val", "coco"}``."""
    gen = torch.Generator().manual_seed(seed)
    roots = {"pascal_trn": out / "CAM_Train", "pascal_val": out / "CAM_Val", "coco": out / "CAM_COCO"}
    pairs: list[tuple[Path, str, int]] = []
    for split in ("trn", "val"):
        for fold in range(4):
            if (split_root / "pascal").is_dir():
                pairs += [(roots[f"pascal_{split}"], n, c) for n, c in read_pascal_split(split_root, split, fold)]
            if (split_root / "coco").is_dir():
                for c, names in read_coco_split(split_root, split, fold).items():
                    pairs += [(roots["coco"], n, c) for n in names]
    for root, name, cls in sorted(set(pairs)):
        path = cam_path(root, name, cls)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(torch.rand(size, size, generator=gen), path)
    return roots
