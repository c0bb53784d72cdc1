"""data/cam_job.py and the generate_cam_*.py command lines on the synthetic benchmark with a small random CLIP."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from data.benchmarks import COCO_CLASSES, PASCAL_CLASSES
from data.splits import read_coco_split, read_pascal_split
from priors import cam_job
from data.cam_manifest import MANIFEST_NAME, read_manifest
from priors.recipes import clip_gradcam as cg
from priors.recipes import PriorRecipe, build_prior
from tests.data_helpers import TINY_CLIP



@pytest.fixture(scope="module")
def tiny_weights(module_tmp) -> Path:
    path = module_tmp("clip") / "tiny_clip.pt"
    torch.save(cg.random_clip_state_dict(1, **TINY_CLIP), path)
    return path


@pytest.fixture(scope="module")
def pascal_cam(tiny_weights) -> PriorRecipe:
    return build_prior("gradcam-rn50", PASCAL_CLASSES, weights=tiny_weights)


@pytest.fixture(scope="module")
def coco_cam(tiny_weights) -> PriorRecipe:
    return build_prior("gradcam-rn50", COCO_CLASSES, weights=tiny_weights)


def _splits(root: Path) -> Path:
    return root / "splits"


def _voc_pairs(root: Path, out: Path) -> list[cam_job.CamPair]:
    return cam_job.pascal_pairs(root / "VOC2012" / "JPEGImages", _splits(root), out / "CAM_Train", out / "CAM_Val")


def _subset(pairs, n_images: int):
    """The pairs of the first ``n_images`` distinct images (keeps tests fast; images with several classes)."""
    keep = list(dict.fromkeys(p.image_path for p in pairs))[:n_images]
    return [p for p in pairs if p.image_path in set(keep)]


def _files(root: Path) -> set[str]:
    """The CAM files under ``root`` (its cam_manifest.json left out)."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST_NAME}


# ---------------------------------------------------------------------------------------------------------
# Which pairs
# ---------------------------------------------------------------------------------------------------------
def test_pascal_pairs_are_the_released_set_once(synthetic_root, tmp_path):
    pairs = _voc_pairs(synthetic_root, tmp_path)
    # released: the training dataset of fold f reads the other folds' trn lists, for f = 0..3; val reads val/f
    released_train = {(n, c) for f in range(4) for g in range(4) if g != f
                      for n, c in read_pascal_split(_splits(synthetic_root), "trn", g)}
    released_val = {(n, c) for f in range(4) for n, c in read_pascal_split(_splits(synthetic_root), "val", f)}
    ours = {(p.out_path.parent.name, p.out_path.name) for p in pairs}
    assert ours == {("CAM_Train", f"{n}--{c}.pt") for n, c in released_train} | \
        {("CAM_Val", f"{n}--{c}.pt") for n, c in released_val}
    assert len(pairs) == len(released_train) + len(released_val)  # each pair once (released: trn ones 3x)
    for p in pairs:
        assert p.image_path == synthetic_root / "VOC2012" / "JPEGImages" / f"{p.out_path.name.split('--')[0]}.jpg"


def test_pascal_duplicate_lines_across_folds_give_one_pair(synthetic_root, tmp_path):
    splits = tmp_path / "splits"
    shutil.copytree(_splits(synthetic_root) / "pascal", splits / "pascal")
    line = (splits / "pascal" / "trn" / "fold0.txt").read_text().splitlines()[0]
    with open(splits / "pascal" / "trn" / "fold1.txt", "a") as f:  # the same pair listed in two folds
        f.write(line + "\n" + line + "\n")
    pairs = cam_job.pascal_pairs(synthetic_root / "VOC2012" / "JPEGImages", splits, tmp_path / "T", tmp_path / "V")
    assert len(pairs) == len(_voc_pairs(synthetic_root, tmp_path))
    assert len({p.out_path for p in pairs}) == len(pairs)


def test_coco_pairs_are_the_released_set_once(synthetic_root, tmp_path):
    root = _splits(synthetic_root)
    pairs = cam_job.coco_pairs(synthetic_root / "COCO2014", root, tmp_path / "CAM_COCO")
    # released: class c's training list from trn fold (c % 4 + 1) % 4, its validation list from val fold c % 4
    trn = [read_coco_split(root, "trn", f) for f in range(4)]
    val = [read_coco_split(root, "val", f) for f in range(4)]
    released = {f"{n}--{c}.pt" for c in range(80) for n in trn[(c % 4 + 1) % 4][c]} | \
        {f"{n}--{c}.pt" for c in range(80) for n in val[c % 4][c]}
    listed = sum(len(v) for d in trn + val for v in d.values())
    ours = [p.out_path.relative_to(tmp_path / "CAM_COCO").as_posix() for p in pairs]
    assert set(ours) == released and len(ours) == len(released) < listed  # trn lists repeat across folds
    assert {o.split("/")[0] for o in ours} == {"train2014", "val2014"}


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------
def test_voc_files_layout_and_values(synthetic_root, tmp_path, pascal_cam):
    pairs = _subset(_voc_pairs(synthetic_root, tmp_path), 5) + \
        _subset([p for p in _voc_pairs(synthetic_root, tmp_path) if p.out_path.parent.name == "CAM_Val"], 3)
    summary = cam_job.run_cam_job(pairs, pascal_cam, bsz=4, nworker=0, progress=False)
    assert (summary.total, summary.computed, summary.skipped, summary.failed) == (len(pairs), len(pairs), 0, [])
    assert _files(tmp_path) == {p.out_path.relative_to(tmp_path).as_posix() for p in pairs}
    from PIL import Image

    for p in pairs[:4]:
        saved = torch.load(p.out_path, map_location="cpu", weights_only=True)
        assert saved.dtype == torch.float32 and saved.shape == (50, 50) and saved.is_contiguous()
        assert p.out_path.stat().st_size < 20_000  # one map, not the batch's storage
        with Image.open(p.image_path) as img:
            direct = cg.compute_cams(pascal_cam.cam.model, [img], [p.class_idx], PASCAL_CLASSES)[0]
        torch.testing.assert_close(saved, direct, atol=2e-4, rtol=0)


def test_coco_files_layout(synthetic_root, tmp_path, coco_cam):
    cam_root = tmp_path / "CAM_COCO"
    all_pairs = cam_job.coco_pairs(synthetic_root / "COCO2014", _splits(synthetic_root), cam_root)
    pairs = all_pairs[:6] + all_pairs[-6:]  # some train2014 and some val2014 pairs
    summary = cam_job.run_cam_job(pairs, coco_cam, bsz=5, nworker=0, cam_size=25, progress=False)
    assert summary.computed == len(pairs)
    names = _files(cam_root)
    assert names == {f"{p.image_path.parent.name}/{p.image_path.name}--{p.class_idx}.pt" for p in pairs}
    assert any(n.startswith("train2014/COCO_train2014_") for n in names)
    assert any(n.startswith("val2014/COCO_val2014_") for n in names)
    assert all(n.endswith(".jpg--" + n.rsplit("--", 1)[1]) for n in names)
    assert torch.load(cam_root / sorted(names)[0], weights_only=True).shape == (25, 25)


def test_batch_size_invariance_with_workers(synthetic_root, tmp_path, pascal_cam):
    pairs1 = _subset(_voc_pairs(synthetic_root, tmp_path / "a"), 8)
    pairs8 = _subset(_voc_pairs(synthetic_root, tmp_path / "b"), 8)
    cam_job.run_cam_job(pairs1, pascal_cam, bsz=1, nworker=0, progress=False)
    summary = cam_job.run_cam_job(pairs8, pascal_cam, bsz=8, nworker=2, progress=False)
    assert summary.computed == len(pairs8)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    for name in _files(tmp_path / "a"):
        a = torch.load(tmp_path / "a" / name, weights_only=True)
        b = torch.load(tmp_path / "b" / name, weights_only=True)
        torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


def test_resume_after_interruption(synthetic_root, tmp_path, pascal_cam, monkeypatch):
    pairs = _subset(_voc_pairs(synthetic_root, tmp_path / "run"), 8)
    real_save = cam_job.atomic_torch_save
    written = []

    def dying_save(obj, path):
        if len(written) == 5:  # killed while writing the 6th file: a partial temp file, no .pt
            Path(path).parent.joinpath(f".{Path(path).name}.partial.tmp").write_bytes(b"PK\x03")
            raise KeyboardInterrupt
        written.append(path)
        return real_save(obj, path)

    monkeypatch.setattr(cam_job, "atomic_torch_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        cam_job.run_cam_job(pairs, pascal_cam, bsz=3, nworker=0, progress=False)
    monkeypatch.setattr(cam_job, "atomic_torch_save", real_save)
    done = sorted((tmp_path / "run").rglob("*.pt"))
    assert len(done) == 5
    for path in done:  # every .pt present is complete
        assert torch.load(path, weights_only=True).shape == (50, 50)

    summary = cam_job.run_cam_job(pairs, pascal_cam, bsz=3, nworker=0, progress=False)
    assert (summary.skipped, summary.computed) == (5, len(pairs) - 5)
    cam_job.run_cam_job(pairs, pascal_cam, bsz=4, nworker=0, progress=False, verify_existing=True)
    again = cam_job.run_cam_job(pairs, pascal_cam, bsz=3, nworker=0, progress=False)
    assert (again.skipped, again.computed) == (len(pairs), 0)
    fresh = _subset(_voc_pairs(synthetic_root, tmp_path / "fresh"), 8)
    cam_job.run_cam_job(fresh, pascal_cam, bsz=8, nworker=0, progress=False)
    for a, b in zip(pairs, fresh):
        torch.testing.assert_close(torch.load(a.out_path, weights_only=True),
                                   torch.load(b.out_path, weights_only=True), atol=2e-4, rtol=0)


def test_verify_existing_recomputes_broken_files(synthetic_root, tmp_path, pascal_cam):
    pairs = _subset(_voc_pairs(synthetic_root, tmp_path), 3)
    cam_job.run_cam_job(pairs, pascal_cam, bsz=8, nworker=0, progress=False)
    good = pairs[0].out_path.read_bytes()
    pairs[0].out_path.write_bytes(good[: len(good) // 2])       # truncated by another tool
    torch.save(torch.zeros(10, 10), pairs[1].out_path)           # another size
    assert cam_job.run_cam_job(pairs, pascal_cam, nworker=0, progress=False).computed == 0
    summary = cam_job.run_cam_job(pairs, pascal_cam, nworker=0, progress=False, verify_existing=True)
    assert summary.computed == 2 and summary.skipped == len(pairs) - 2
    assert torch.load(pairs[1].out_path, weights_only=True).shape == (50, 50)


# ---------------------------------------------------------------------------------------------------------
# Bad input and the command line
# ---------------------------------------------------------------------------------------------------------
def _copy_voc(synthetic_root: Path, dest: Path, n_images: int) -> tuple[Path, list[str]]:
    """A PASCAL root whose eight lists all hold the pairs of the first ``n_images`` images of trn/fold0."""
    shutil.copytree(synthetic_root / "VOC2012" / "JPEGImages", dest / "VOC2012" / "JPEGImages")
    lines = (synthetic_root / "splits" / "pascal" / "trn" / "fold0.txt").read_text().splitlines()
    names = list(dict.fromkeys(line.split("__")[0] for line in lines))[:n_images]
    keep = "".join(f"{line}\n" for line in lines if line.split("__")[0] in names)
    for split in ("trn", "val"):
        folder = dest / "splits" / "pascal" / split
        folder.mkdir(parents=True)
        for fold in range(4):
            (folder / f"fold{fold}.txt").write_text(keep)
    return dest, names


def test_unreadable_images_are_reported_and_the_rest_computed(synthetic_root, tmp_path, tiny_weights, capsys):
    root, names = _copy_voc(synthetic_root, tmp_path / "data", 4)
    images = root / "VOC2012" / "JPEGImages"
    (images / f"{names[0]}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    data = (images / f"{names[1]}.jpg").read_bytes()
    (images / f"{names[1]}.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (images / f"{names[2]}.jpg").unlink()                              # missing
    argv = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--clip-weights", str(tiny_weights),
            "--device", "cpu", "--bsz", "2", "--nworker", "0", "--no-progress"]
    assert cam_job.main("pascal", argv) == 1
    err = capsys.readouterr().err
    for name in names[:3]:
        assert f"{name}.jpg" in err
    for folder in ("CAM_Train", "CAM_Val"):  # the same pairs, listed in all folds, once per folder
        written = _files(root / folder)
        assert written and all(n.startswith(f"{names[3]}--") for n in written)


def test_cli_bad_arguments(synthetic_root, tmp_path, tiny_weights, capsys):
    root, _ = _copy_voc(synthetic_root, tmp_path / "data", 1)
    base = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--device", "cpu", "--nworker", "0",
            "--no-progress"]
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert cam_job.main("pascal", base + ["--clip-weights", str(notes)]) == 2
    assert "neither a TorchScript archive" in capsys.readouterr().err
    assert cam_job.main("pascal", base + ["--clip-weights", str(tmp_path / "nope.pt")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert cam_job.main("pascal", base[:2] + ["--splitpath", str(tmp_path / "no_splits")] + base[4:]) == 2
    assert "no_splits" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cam_job.main("pascal", base + ["--bsz", "0", "--clip-weights", str(tiny_weights)])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        cam_job.main("pascal", base + ["--imgpath", str(tmp_path / "missing"), "--clip-weights", str(tiny_weights)])


def test_cli_coco_end_to_end_and_rerun(synthetic_root, tmp_path, tiny_weights, capsys):
    """generate_cam_coco.py's main on a COCO root whose lists hold a few pairs; a second run skips them all."""
    import pickle

    splits = tmp_path / "splits" / "coco"
    for split in ("trn", "val"):
        (splits / split).mkdir(parents=True)
        for fold in range(4):
            full = read_coco_split(synthetic_root / "splits", split, fold)
            small = {c: (v[:1] if c in (0, 1, 2, 3) else []) for c, v in full.items()}
            with open(splits / split / f"fold{fold}.pkl", "wb") as f:
                pickle.dump(small, f)
    argv = ["--imgpath", str(synthetic_root / "COCO2014"), "--campath", str(tmp_path / "cams"),
            "--splitpath", str(tmp_path / "splits"), "--clip-weights", str(tiny_weights), "--device", "cpu",
            "--nworker", "0", "--no-progress", "--datapath", str(tmp_path)]
    assert cam_job.main("coco", argv) == 0
    files = _files(tmp_path / "cams")
    assert len(files) == 8 and {f.split("/")[0] for f in files} == {"train2014", "val2014"}
    # --precision auto, resolved on the CPU
    assert read_manifest(tmp_path / "cams").settings.settings["precision"] == "fp32"
    assert cam_job.main("coco", argv) == 0
    assert _files(tmp_path / "cams") == files


def test_precision_auto_is_fp16_on_cuda_and_fp32_elsewhere():
    assert cam_job.build_parser("pascal").parse_args([]).precision == "auto"
    assert cg.resolve_clip_precision("auto", "cpu") == "fp32"
    assert cg.resolve_clip_precision("auto", torch.device("cuda")) == "fp16"  # a device object needs no GPU
    assert cg.resolve_clip_precision("auto", "cuda:1") == "fp16"
    assert [cg.resolve_clip_precision(p, "cuda") for p in ("fp32", "fp16")] == ["fp32", "fp16"]
    assert [cg.resolve_clip_precision(p, "cpu") for p in ("fp32", "fp16")] == ["fp32", "fp16"]
    with pytest.raises(ValueError, match="precision must be one of"):
        cg.resolve_clip_precision("bf16", "cpu")


def test_scripts_are_thin_wrappers(repo_root):
    for script, benchmark in (("generate_cam_voc.py", "pascal"), ("generate_cam_coco.py", "coco")):
        text = (repo_root / script).read_text()
        assert f'main("{benchmark}")' in text and len(text.splitlines()) < 30
    voc = cam_job.build_parser("pascal").parse_args([])
    coco = cam_job.build_parser("coco").parse_args([])
    for flag in ("imgpath", "traincampath", "valcampath", "datapath", "splitpath", "clip_weights", "device", "bsz",
                 "nworker", "cam_size", "amp"):
        assert hasattr(voc, flag)
    assert hasattr(coco, "campath") and hasattr(coco, "imgpath")


@pytest.mark.slow
def test_killed_process_leaves_no_truncated_file_and_resumes(synthetic_root, tmp_path, tiny_weights, repo_root):
    """SIGKILL generate_cam_voc.py mid-run: every .pt left is complete; a rerun computes only the rest."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, _ = _copy_voc(synthetic_root, tmp_path / "data", 12)
    argv = [sys.executable, str(repo_root / "generate_cam_voc.py"), "--datapath", str(root), "--splitpath",
            str(root / "splits"), "--clip-weights", str(tiny_weights), "--device", "cpu", "--bsz", "1",
            "--nworker", "0", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(root.rglob("*.pt"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(root.rglob("*.pt"))
    assert len(done) >= 3
    for path in done:
        assert torch.load(path, weights_only=True).shape == (50, 50)
    total = len(_voc_pairs(root, root))
    # what the manifests recorded before the kill is skipped; files written after their last rewrite are redone
    from data.cam_manifest import read_manifest

    recorded = sum(len(record.classes) for folder in ("CAM_Train", "CAM_Val")
                   for name, record in read_manifest(root / folder).images.items()
                   if all((root / folder / f"{name}--{c}.pt").exists() for c in record.classes))
    assert 0 < recorded <= len(done)
    rerun = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{total} pairs: {total - recorded} computed" in rerun.stderr
    assert f", {recorded} skipped" in rerun.stderr
    assert len(list(root.rglob("*.pt"))) == total


# ---------------------------------------------------------------------------------------------------------
# cam_manifest.json: a folder never mixes CAMs made with different settings
# ---------------------------------------------------------------------------------------------------------
def _settings(**changes):
    """The settings of a gradcam-rn50 folder, as the CAM job records them."""
    from priors.recipes import PRIOR_RECIPE_IDS
    from common.io import names_sha256
    from data.cam_manifest import CamSettings

    base = dict(clip_weights_sha256="a" * 64, precision="fp32", clip_image_size=224, cam_size=50,
                prompt_template="a photo of a {}", class_names=PASCAL_CLASSES)
    settings = {**base, **changes}
    settings["class_names_sha256"] = names_sha256(settings.pop("class_names"))
    return CamSettings(PRIOR_RECIPE_IDS["gradcam-rn50"], settings)


def test_manifest_same_settings_resume_other_settings_refused(tmp_path):
    from data.cam_manifest import CamManifestError, claim_folder

    folder = tmp_path / "CAM_Val"
    claim_folder(folder, _settings())
    torch.save(torch.rand(4, 4), folder / "2007_000001--0.pt")
    claim_folder(folder, _settings())  # same settings: the job resumes, the file stays
    assert (folder / "2007_000001--0.pt").exists()
    for change, named in ((dict(clip_weights_sha256="b" * 64), "clip_weights_sha256"),
                          (dict(precision="amp"), "precision"), (dict(cam_size=25), "cam_size"),
                          (dict(class_names=COCO_CLASSES), "class_names_sha256")):
        with pytest.raises(CamManifestError, match=f"{folder} holds CAMs made with other settings .*{named}.*--overwrite"):
            claim_folder(folder, _settings(**change))
        with pytest.raises(CamManifestError):  # --verify-existing checks the manifest too
            claim_folder(folder, _settings(**change), verify_existing=True)
    assert (folder / "2007_000001--0.pt").exists()


def test_manifest_overwrite_deletes_the_old_cams_first(tmp_path):
    from data.cam_manifest import MANIFEST_NAME, claim_folder, read_manifest

    folder = tmp_path / "CAM_COCO"
    claim_folder(folder, _settings())
    (folder / "val2014").mkdir()
    torch.save(torch.rand(4, 4), folder / "val2014" / "COCO_val2014_000000000001.jpg--3.pt")
    claim_folder(folder, _settings(precision="amp"), overwrite=True)
    assert not list(folder.rglob("*--*.pt")) and read_manifest(folder).settings.settings["precision"] == "amp"
    assert (folder / MANIFEST_NAME).is_file()


def test_cams_without_a_manifest_need_verify_existing(tmp_path):
    from data.cam_manifest import CamManifestError, claim_folder, read_manifest

    folder = tmp_path / "CAM_Train"
    folder.mkdir()
    torch.save(torch.rand(4, 4), folder / "2007_000001--0.pt")  # e.g. written by the released script
    with pytest.raises(CamManifestError, match="--verify-existing"):
        claim_folder(folder, _settings())
    claim_folder(folder, _settings(), verify_existing=True)
    assert (folder / "2007_000001--0.pt").exists() and read_manifest(folder).settings.recipe
    claim_folder(tmp_path / "new_folder", _settings())  # an empty or new folder is simply claimed


def test_a_format1_manifest_is_read_and_its_cams_need_verify_existing(tmp_path):
    """Earlier versions wrote the Grad-CAM settings at the top level and no image records."""
    import json

    from data.cam_manifest import CamManifestError, claim_folder, read_manifest

    folder = tmp_path / "CAM_Val"
    folder.mkdir()
    settings = _settings()
    (folder / MANIFEST_NAME).write_text(json.dumps({"recipe": settings.recipe, **settings.settings}))
    old = read_manifest(folder)
    assert old.version == 1 and old.images is None and not settings.differences(old.settings)
    torch.save(torch.rand(4, 4), folder / "2007_000001--0.pt")
    with pytest.raises(CamManifestError, match="earlier version that did not record their images.*--verify-existing"):
        claim_folder(folder, settings)
    with pytest.raises(CamManifestError, match="other settings .*precision"):
        claim_folder(folder, _settings(precision="amp"))
    claimed = claim_folder(folder, settings, verify_existing=True)
    assert claimed.adopt and claimed.images == {} and read_manifest(folder).version == 2


def test_changed_images_get_their_cams_recomputed_and_a_new_mtime_alone_does_not(synthetic_root, tmp_path,
                                                                                   pascal_cam):
    """The CAM job skips a file only when the manifest says it was made from its image as it is now."""
    import os

    from data.cam_manifest import claim_folder, read_manifest

    root, names = _copy_voc(synthetic_root, tmp_path / "data", 3)
    pairs = _subset(_voc_pairs(root, root), 3)
    folders = sorted({p.out_path.parent for p in pairs})
    settings = _settings(class_names=PASCAL_CLASSES)

    def run():
        manifests = {folder: claim_folder(folder, settings) for folder in folders}
        return cam_job.run_cam_job(pairs, pascal_cam, bsz=2, nworker=0, progress=False, manifests=manifests)

    assert run().computed == len(pairs)
    manifest = read_manifest(folders[0])
    image = root / "VOC2012" / "JPEGImages" / f"{names[0]}.jpg"
    record = manifest.images[names[0]]
    assert (record.identity.bytes, record.identity.mtime_ns) == (image.stat().st_size, image.stat().st_mtime_ns)
    assert record.classes == {p.class_idx for p in pairs if p.image_path == image and p.out_path.parent == folders[0]}

    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # copied without its times
    again = run()
    assert (again.computed, again.skipped) == (0, len(pairs))
    assert read_manifest(folders[0]).images[names[0]].identity.mtime_ns == image.stat().st_mtime_ns  # refreshed

    other = root / "VOC2012" / "JPEGImages" / f"{names[1]}.jpg"
    image.write_bytes(other.read_bytes())  # the same name, another picture
    mine = [p for p in pairs if p.image_path == image]
    before = {p.out_path: p.out_path.stat().st_ino for p in pairs}
    redone = run()
    assert (redone.computed, redone.replaced, redone.skipped) == (len(mine), len(mine), len(pairs) - len(mine))
    rewritten = {p.out_path for p in pairs if p.out_path.stat().st_ino != before[p.out_path]}  # atomic: new inode
    assert rewritten == {p.out_path for p in mine}
    assert read_manifest(folders[0]).images[names[0]].identity.sha256 == \
        read_manifest(folders[0]).images[names[1]].identity.sha256


def test_a_cam_written_after_the_last_manifest_rewrite_is_recomputed(synthetic_root, tmp_path, pascal_cam):
    """A killed job leaves CAM files its manifest does not record: they are made again, not trusted."""
    from data.cam_manifest import claim_folder

    root, _ = _copy_voc(synthetic_root, tmp_path / "data", 2)
    pairs = _subset([p for p in _voc_pairs(root, root) if p.out_path.parent.name == "CAM_Val"], 2)
    folder = pairs[0].out_path.parent
    settings = _settings(class_names=PASCAL_CLASSES)
    cam_job.run_cam_job(pairs, pascal_cam, nworker=0, progress=False,
                        manifests={folder: claim_folder(folder, settings)})
    manifest = claim_folder(folder, settings)
    name = pairs[0].out_path.name.split("--")[0]
    manifest.images.pop(name)
    manifest.save()
    summary = cam_job.run_cam_job(pairs, pascal_cam, nworker=0, progress=False,
                                  manifests={folder: claim_folder(folder, settings)})
    unrecorded = sum(p.out_path.name.startswith(f"{name}--") for p in pairs)
    assert (summary.computed, summary.replaced) == (unrecorded, unrecorded)


@pytest.mark.slow
def test_the_script_recomputes_the_cams_of_a_regenerated_benchmark(tmp_path, tiny_weights, repo_root):
    """The reported case: data.synthetic again with another seed (other pictures, same file names), then the CAM
    script: every CAM is recomputed, none of the old ones is reused."""
    import subprocess
    import sys

    from data.synthetic import make_benchmark

    data = tmp_path / "data"
    cams = ["--datapath", str(data), "--splitpath", str(data / "splits"), "--clip-weights", str(tiny_weights),
            "--device", "cpu", "--nworker", "0", "--no-progress"]
    make_benchmark(data, seed=0, images_per_class=2, benchmarks=("pascal",))
    assert cam_job.main("pascal", cams) == 0  # generate_cam_voc.py's main, in this process
    make_benchmark(data, seed=1, images_per_class=2, benchmarks=("pascal",))
    total = len(_voc_pairs(data, data))
    rerun = subprocess.run([sys.executable, "generate_cam_voc.py", *cams], cwd=repo_root, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{total} pairs: {total} computed" in rerun.stderr and ", 0 skipped" in rerun.stderr, rerun.stderr[-2000:]
    assert "replacing stale files" in rerun.stderr


def test_a_tmpdir_too_long_for_the_workers_is_one_line_not_a_hang(synthetic_root, tmp_path, tiny_weights, repo_root):
    """With workers, a $TMPDIR too long for their socket used to hang the CAM job for ever (each batch dropped
    in a worker's feeder thread); now it stops at once with one line naming TMPDIR (exit status 2)."""
    import os
    import subprocess
    import sys

    from tests.test_workers import long_tempdir, skip_unless_too_long

    tempdir = long_tempdir(tmp_path)
    skip_unless_too_long(tempdir)
    root, _ = _copy_voc(synthetic_root, tmp_path / "data", 2)
    argv = [sys.executable, str(repo_root / "generate_cam_voc.py"), "--datapath", str(root), "--splitpath",
            str(root / "splits"), "--clip-weights", str(tiny_weights), "--device", "cpu", "--nworker", "1",
            "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(repo_root), TMPDIR=str(tempdir))
    proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "--nworker 1: DataLoader workers cannot pass tensors back" in proc.stderr
    assert "Set TMPDIR to a shorter folder (e.g. TMPDIR=/tmp) or pass --nworker 0" in proc.stderr
