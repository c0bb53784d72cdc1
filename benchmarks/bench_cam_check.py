"""What the CAM provenance check (priors/provenance.py) adds to the start of train.py / test.py, against the
CAM presence check that ran before it (data/dataset.py check_cams_exist), measured in the same run.

    python benchmarks/bench_cam_check.py                      # synthetic PASCAL-5i, fold 0 training split
    python benchmarks/bench_cam_check.py --images-per-class 100

A synthetic PASCAL benchmark is made in a temporary folder with a CAM file (a tiny tensor) for every pair of
the training lists and a manifest recording every image (what generate_cam_voc.py writes). Timed, best of
``--repeat``, with a warm file cache:

* presence: ``check_cams_exist`` on the fold-0 training dataset (one ``listdir`` per CAM folder);
* provenance: ``check_cam_provenance`` on the same dataset (manifest read and parsed, one ``stat`` per distinct
  image, the class-name and record checks);
* the COCO-sized parts measured directly: parsing a manifest of ``--coco-images`` records (the 118,998 images
  HSNet's COCO-20i lists name) and looking up the records of ``--coco-train-images`` of them, and ``stat`` of as many
  image files (the synthetic ones, repeated).

The estimate for COCO-20i's start = that parse and look-up + stat per image x the fold's training images; a cold
file cache (first start after a reboot, network file systems) makes each stat a disk or network round trip
and is not measured here.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from priors.recipes import PRIOR_RECIPE_IDS  # noqa: E402
from common.io import names_sha256  # noqa: E402
from data.cam_files import cam_path  # noqa: E402
from data.cam_manifest import (CamManifest, CamSettings, ImageIdentity, ImageRecord, image_identity,  # noqa: E402
                               parse_manifest)
from data.dataset import build_dataset, check_cams_exist  # noqa: E402
from priors.provenance import 
from data.synthetic import make_benchmark  # noqa: E402
from priors.provenance import check_cam_provenance  # noqa: E402
from data.benchmarks import PASCAL_CLASSES  # noqa: E402


def best_of(repeat: int, function) -> float:
    """The fastest of ``repeat`` calls of ``function``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def build(root: Path, images_per_class: int):
    """A synthetic PASCAL benchmark with the training CAMs of fold 0 and their manifest; returns the dataset."""
    make_benchmark(root, images_per_class=images_per_class, benchmarks=("pascal",))
    cams = root / "CAM_Train"
    dataset = build_dataset("pascal", datapath=root, fold=0, split="trn", img_size=64, cam_train_path=cams,
                            cam_val_path=root / "CAM_Val", splitpath=root / "splits", seed=0)
    settings = CamSettings(PRIOR_RECIPE_IDS["gradcam-rn50"], {
        "clip_weights_sha256": "0" * 64, "precision": "fp32", "clip_image_size": 224, "cam_size": 8,
        "prompt_template": "a photo of a {}", "class_names_sha256": names_sha256(PASCAL_CLASSES)})
    manifest = CamManifest(cams, settings, images={})
    tiny = torch.zeros(8, 8)
    for name, cls in dataset.needed_cam_pairs():
        path = cam_path(cams, name, cls)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(tiny, path)
        record = manifest.images.setdefault(name, ImageRecord(image_identity(dataset.image_path(name))))
        record.classes.add(cls)
    manifest.save()
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-per-class", type=int, default=6, help="synthetic images per class and split")
    # HSNet's COCO-20i lists name 79,939 train2014 and 39,059 val2014 images (all folds); a fold's training
    # lists 62,040 (fold 0) to 74,381 (fold 1) distinct images
    parser.add_argument("--coco-images", type=int, default=118_998,
                        help="records of the COCO-sized manifest (images of CAM_COCO)")
    parser.add_argument("--coco-train-images", type=int, default=74_381,
                        help="distinct images of a COCO-20i fold's training lists (the check stats each)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = build(root, args.images_per_class)
        images = sorted({name for name, _ in dataset.needed_cam_pairs()})
        presence = best_of(args.repeat, lambda: check_cams_exist(dataset))
        provenance = best_of(args.repeat, lambda: check_cam_provenance([dataset]))
        print(f"synthetic PASCAL fold 0 trn: {len(dataset.needed_cam_pairs())} CAMs of {len(images)} images")
        print(f"  presence check (before):   {presence * 1e3:8.2f} ms")
        print(f"  provenance check (added):  {provenance * 1e3:8.2f} ms  ({provenance / presence:.2f}x the presence "
              f"check; {provenance / len(images) * 1e6:.1f} us per image)")

        paths = [dataset.image_path(name) for name in images]
        nstat = args.coco_images
        stat_all = best_of(args.repeat, lambda: [os.stat(paths[i % len(paths)]) for i in range(nstat)])
        identity = ImageIdentity(150_000, 1_700_000_000_000_000_000, "0" * 64)
        big = CamManifest(root, CamSettings(PRIOR_RECIPE_IDS["gradcam-rn50"], {"class_names_sha256": "0" * 64}),
                          images={f"train2014/COCO_train2014_{i:012d}.jpg": ImageRecord(identity, {i % 80, 7})
                                  for i in range(args.coco_images)})
        text = big.to_json()
        names = sorted(big.images)[:args.coco_train_images]

        def parse_and_look_up() -> None:
            manifest = parse_manifest(root, text)
            for name in names:
                manifest.record(name)

        parse = best_of(args.repeat, parse_and_look_up)
        per_stat = stat_all / nstat
        estimate = parse + per_stat * args.coco_train_images
        print(f"COCO-sized parts: manifest of {args.coco_images} records = {len(text) / 1e6:.1f} MB, parsed and "
              f"{len(names)} records looked up in {parse:.2f} s; {nstat} stats in {stat_all:.2f} s "
              f"({per_stat * 1e6:.1f} us each, warm cache)")
        print(f"estimate for a COCO-20i training start ({args.coco_train_images} images): {estimate:.2f} s "
              "(warm file cache)")


if __name__ == "__main__":
    main()
