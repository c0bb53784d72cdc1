"""Dataset preparation without the internet: the COCO mask converter on the synthetic instances JSON, the
downloader (resume, checksum) against a loopback HTTP server, and unpacking into the HSNet layout."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data import prepare
from data.errors import DataError
from data.prepare import Source, build_coco_masks, download, prepare_coco, prepare_pascal, unpack


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support; ``server.truncate_once`` cuts the first response short."""

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        path = Path(self.translate_path(self.path.split("?")[0]))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.server.requests.append(self.headers.get("Range"))
        start = 0
        rng = self.headers.get("Range")
        if rng and self.server.ranges:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.truncate_once:
            self.server.truncate_once = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "www"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(folder)))
    httpd.requests, httpd.ranges, httpd.truncate_once = [], True, False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324


def test_download_resumes_a_partial_file(server, tmp_path):
    folder, url, httpd = server
    payload = np.random.default_rng(0).bytes(3 << 20)
    (folder / "a.bin").write_bytes(payload)
    dest = tmp_path / "dl" / "a.bin"
    dest.parent.mkdir()
    (dest.parent / "a.bin.part").write_bytes(payload[:1000])
    download(f"{url}/a.bin", dest, md5=_md5(payload), timeout=5)
    assert dest.read_bytes() == payload and httpd.requests == ["bytes=1000-"]
    download(f"{url}/a.bin", dest, md5=_md5(payload), timeout=5)  # verified: no second request
    assert len(httpd.requests) == 1


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    folder, url, httpd = server
    payload = np.random.default_rng(1).bytes(1 << 20)
    (folder / "b.bin").write_bytes(payload)
    httpd.truncate_once = True
    dest = tmp_path / "b.bin"
    with pytest.raises(DataError, match="run (the command )?again to resume"):
        download(f"{url}/b.bin", dest, md5=_md5(payload), timeout=5)
    assert 0 < (tmp_path / "b.bin.part").stat().st_size < len(payload)
    download(f"{url}/b.bin", dest, md5=_md5(payload), timeout=5)
    assert dest.read_bytes() == payload and httpd.requests[-1].startswith("bytes=")


def test_server_without_range_support_restarts(server, tmp_path):
    folder, url, httpd = server
    httpd.ranges = False
    (folder / "c.bin").write_bytes(b"0123456789" * 100)
    (tmp_path / "c.bin.part").write_bytes(b"XXXX")
    download(f"{url}/c.bin", tmp_path / "c.bin", md5=_md5(b"0123456789" * 100), timeout=5)
    assert (tmp_path / "c.bin").read_bytes() == b"0123456789" * 100


def test_checksum_mismatch_deletes_the_file(server, tmp_path):
    folder, url, _ = server
    (folder / "d.bin").write_bytes(b"corrupted")
    with pytest.raises(DataError, match="MD5 .* differs from the published"):
        download(f"{url}/d.bin", tmp_path / "d.bin", md5="0" * 32, timeout=5)
    assert not (tmp_path / "d.bin").exists()
    with pytest.raises(DataError, match="HTTP 404"):
        download(f"{url}/missing.bin", tmp_path / "e.bin", timeout=5)


def test_unpack_refuses_escaping_paths(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("SegmentationClassAug/../../evil.png", b"x")
    source = Source("evil.zip", "", None, "SegmentationClassAug/", "VOC2012/SegmentationClassAug")
    with pytest.raises(DataError, match="unsafe path"):
        unpack(archive, tmp_path / "out", source)
    assert not (tmp_path / "evil.png").exists()


def test_prepare_pascal_from_loopback(server, tmp_path):
    folder, url, httpd = server
    jpg = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(jpg, format="JPEG")
    with tarfile.open(folder / "voc.tar", "w") as tf:
        for name, data in (("VOCdevkit/VOC2012/JPEGImages/2007_000001.jpg", jpg.getvalue()),
                           ("VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt", b"2007_000001\n"),
                           ("VOCdevkit/README", b"outside the prefix")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(folder / "aug.zip", "w") as zf:
        zf.writestr("SegmentationClassAug/2007_000001.png", b"png bytes")
        zf.writestr("__MACOSX/SegmentationClassAug/._2007_000001.png", b"junk")
    sources = (Source("voc.tar", f"{url}/voc.tar", _md5((folder / "voc.tar").read_bytes()), "VOCdevkit/VOC2012/",
                      "VOC2012"),
               Source("aug.zip", f"{url}/aug.zip?dl=1", None, "SegmentationClassAug/", "VOC2012/SegmentationClassAug"))
    root = tmp_path / "data"
    out = prepare_pascal(root, sources=sources, timeout=5)
    assert (out / "JPEGImages" / "2007_000001.jpg").read_bytes() == jpg.getvalue()
    assert (out / "SegmentationClassAug" / "2007_000001.png").read_bytes() == b"png bytes"
    assert (out / "ImageSets" / "Segmentation" / "val.txt").is_file()
    assert not (root / "README").exists() and not (root / "__MACOSX").exists()
    assert not (root / "downloads" / "voc.tar").exists()  # archives removed unless --keep-archives
    httpd.shutdown()  # a second run is a no-op (offline)
    prepare_pascal(root, sources=sources, timeout=1)


def _synthetic_labels(root: Path, split: str, name: str) -> np.ndarray:
    return np.array(Image.open(root / "COCO2014" / "annotations" / split / name))


def test_coco_converter_reproduces_the_synthetic_masks(synthetic_root, tmp_path):
    out = tmp_path / "masks"
    written = build_coco_masks(synthetic_root / "COCO2014" / "annotations" / "instances_val2014.json", out)
    pngs = sorted(out.glob("*.png"))
    assert written == len(pngs) == len(list((synthetic_root / "COCO2014" / "val2014").glob("*.jpg")))
    for png in pngs:
        ours = np.array(Image.open(png))
        assert ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, _synthetic_labels(synthetic_root, "val2014", png.name), err_msg=png.name)
    assert build_coco_masks(synthetic_root / "COCO2014" / "annotations" / "instances_val2014.json", out) == 0


def test_coco_converter_rejects_a_non_coco20i_json(tmp_path):
    bad = tmp_path / "instances_val2014.json"
    bad.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DataError, match="has 1 categories"):
        build_coco_masks(bad, tmp_path / "m")


def test_prepare_coco_from_loopback(synthetic_root, server, tmp_path):
    """Archives made from a few synthetic images per split; masks built with two worker processes."""
    folder, url, _ = server
    src = synthetic_root / "COCO2014"
    with zipfile.ZipFile(folder / "annotations_trainval2014.zip", "w") as ann_zip:
        for split in ("train2014", "val2014"):
            instances = json.loads((src / "annotations" / f"instances_{split}.json").read_text())
            keep = {img["id"] for img in instances["images"][:12]}
            instances["images"] = [img for img in instances["images"] if img["id"] in keep]
            instances["annotations"] = [a for a in instances["annotations"] if a["image_id"] in keep]
            ann_zip.writestr(f"annotations/instances_{split}.json", json.dumps(instances))
            ann_zip.writestr(f"annotations/captions_{split}.json", "{}")  # not unpacked
            with zipfile.ZipFile(folder / f"{split}.zip", "w") as img_zip:
                for img in instances["images"]:
                    img_zip.write(src / split / img["file_name"], f"{split}/{img['file_name']}")
    sources = tuple(Source(s.name, f"{url}/{s.name}", _md5((folder / s.name).read_bytes()), s.members, s.into)
                    for s in prepare.COCO_SOURCES)
    root = tmp_path / "data"
    base = prepare_coco(root, sources=sources, timeout=5, nworker=2)
    assert not (base / "annotations" / "captions_val2014.json").exists()
    for split in ("train2014", "val2014"):
        pngs = sorted((base / "annotations" / split).glob("*.png"))
        assert len(pngs) == 12 and len(list((base / split).glob("*.jpg"))) == 12
        for png in pngs:
            np.testing.assert_array_equal(np.array(Image.open(png)), _synthetic_labels(synthetic_root, split, png.name))


def test_cli_reports_errors_without_a_traceback(monkeypatch, tmp_path, capsys):
    def fail(*args, **kwargs):
        raise DataError("download of X failed (offline)")

    monkeypatch.setattr(prepare, "prepare_pascal", fail)
    assert prepare.main(["pascal", "--datapath", str(tmp_path), "--no-splits"]) == 2
    assert "error: download of X failed (offline)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# FSS-1000: class lists fetched and verified, the archive placed by the user checked and unpacked
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fss_tree(module_tmp) -> Path:
    from data.synthetic import make_benchmark

    return make_benchmark(module_tmp("fss_prep"), seed=0, benchmarks=["fss"], fss_classes=(2, 1, 1),
                          min_size=32, max_size=32)


def _fss_zip(tree: Path, path: Path, prefix: str = "FSS-1000/", drop: str = "", extra: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted((tree / "FSS-1000").rglob("*.*")):
            rel = file.relative_to(tree / "FSS-1000").as_posix()
            if rel != drop:
                zf.write(file, prefix + rel)
        zf.writestr(f"__MACOSX/{prefix}junk/._1.jpg", b"resource fork")  # not unpacked
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def served_fss_lists(server, fss_tree, tmp_path, monkeypatch):
    """HSNet's fss lists as the synthetic ones, served on loopback (checksum table and cache patched)."""
    from data import splits

    folder, url, _ = server
    table = {}
    for split in ("trn", "val", "test"):
        rel = f"fss/{split}.txt"
        (folder / "fss").mkdir(exist_ok=True)
        (folder / rel).write_bytes((fss_tree / "splits" / rel).read_bytes())
        table[rel] = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    monkeypatch.setattr(splits, "SPLIT_SHA256", table)
    monkeypatch.setattr(splits, "default_cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setenv(splits.SPLITS_URL_ENV, url)
    return tmp_path / "cache"


def _tree_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_fss_fetches_the_lists_and_unpacks_the_archive(fss_tree, served_fss_lists, tmp_path, capsys):
    root = tmp_path / "data"
    downloads = root / "downloads"
    downloads.mkdir(parents=True)
    assert prepare.main(["fss", "--datapath", str(root), "--timeout", "5"]) == 2  # nothing placed yet
    err = capsys.readouterr().err
    assert f"FSS-1000 archive {downloads / 'FSS-1000.zip'} not found" in err and prepare.FSS_DRIVE_URL in err
    assert (served_fss_lists / "fss" / "test.txt").read_bytes().count(b"\r\n") == 1  # fetched and verified

    _fss_zip(fss_tree, downloads / "FSS-1000.zip")
    assert prepare.main(["fss", "--datapath", str(root), "--timeout", "5"]) == 0
    assert _tree_files(root / "FSS-1000") == _tree_files(fss_tree / "FSS-1000")
    assert (downloads / "FSS-1000.zip").is_file()  # the user's archive stays
    assert prepare.main(["fss", "--datapath", str(root), "--timeout", "5"]) == 0  # done: a no-op
    assert "fss ready under" in capsys.readouterr().out


@pytest.mark.parametrize("prefix", ["", "fewshot_data/fewshot_data/"])
def test_prepare_fss_accepts_any_top_folder(fss_tree, tmp_path, prefix):
    archive = _fss_zip(fss_tree, tmp_path / "any_name.zip", prefix=prefix,
                       extra={f"{prefix}README.txt": b"not a class folder"})
    out = prepare.prepare_fss(tmp_path / "data", fss_tree / "splits", archive=archive)
    assert _tree_files(out) == _tree_files(fss_tree / "FSS-1000")


def test_prepare_fss_refuses_bad_archives(fss_tree, tmp_path, capsys):
    lists = fss_tree / "splits"
    name = sorted(p.name for p in (fss_tree / "FSS-1000").iterdir())[0]
    cases = [
        (_fss_zip(fss_tree, tmp_path / "a.zip", drop=f"{name}/7.png"), rf"lacks 1 of the 80 files .*{name}/7.png"),
        (_fss_zip(fss_tree, tmp_path / "b.zip", extra={f"FSS-1000/{name}/../../evil.jpg": b"x"}), "unsafe path"),
        (_fss_zip(fss_tree, tmp_path / "c.zip", prefix="x/", extra={f"y/{name}/1.jpg": b"x"}), "several folders"),
    ]
    (tmp_path / "d.zip").write_bytes(b"PK\x03\x04 truncated")
    cases.append((tmp_path / "d.zip", "not a readable zip"))
    for archive, match in cases:
        with pytest.raises(DataError, match=match):
            prepare.prepare_fss(tmp_path / archive.stem, lists, archive=archive)
    assert not (tmp_path / "evil.jpg").exists() and not (tmp_path / "b" / "evil.jpg").exists()
    assert prepare.main(["fss", "--datapath", str(tmp_path / "e"), "--splitpath", str(lists), "--archive",
                         str(tmp_path / "a.zip")]) == 2
    assert "lacks 1 of the 80 files" in capsys.readouterr().err
    for argv, needle in ((["pascal", "--archive", "x.zip"], "only for fss"),
                         (["fss", "--no-splits"], "fss needs HSNet's class lists")):
        with pytest.raises(SystemExit):
            prepare.main(argv + ["--datapath", str(tmp_path)])
        assert needle in capsys.readouterr().err
