"""Split lists: local folders, the fetched + SHA-256-verified cache (served on loopback), safe pickles."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pickle
import shutil
import threading
from pathlib import Path

import pytest

from common.paths import REPO_ROOT
from data import splits
from data.errors import SplitChecksumError, SplitError, SplitNotFoundError, UnsafePickleError
from data.splits import read_coco_split, read_fss_split, read_pascal_split, resolve_split_root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def served(synthetic_root, tmp_path, monkeypatch):
    """The synthetic split lists served on 127.0.0.1 as if they were HSNet's (checksum table patched)."""
    folder = tmp_path / "remote"
    shutil.copytree(synthetic_root / "splits", folder)
    table = {rel: hashlib.sha256((folder / rel).read_bytes()).hexdigest() for rel in splits.SPLIT_SHA256}
    monkeypatch.setattr(splits, "SPLIT_SHA256", table)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


def test_checksum_table_lists_hsnet_files():
    assert len(splits.SPLIT_SHA256) == 19
    assert {rel.split("/")[0] for rel in splits.SPLIT_SHA256} == {"pascal", "coco", "fss"}
    assert {rel for rel in splits.SPLIT_SHA256 if rel.startswith("fss/")} == {"fss/trn.txt", "fss/val.txt",
                                                                              "fss/test.txt"}
    assert all(len(v) == 64 for v in splits.SPLIT_SHA256.values())
    assert splits.default_cache_dir().relative_to(REPO_ROOT) == Path(".cache/splits")


def test_local_splitpath_is_trusted(synthetic_root):
    root = resolve_split_root(synthetic_root / "splits")
    assert root == (synthetic_root / "splits").resolve()
    assert read_pascal_split(root, "val", 0)[0][1] in range(5)


def test_missing_local_splitpath(tmp_path):
    with pytest.raises(SplitNotFoundError, match="is not a folder"):
        resolve_split_root(tmp_path / "nope")
    with pytest.raises(SplitNotFoundError, match="fold2.txt not found"):
        read_pascal_split(tmp_path, "trn", 2)


def test_fetch_verifies_and_caches(served, tmp_path):
    folder, url, server = served
    cache = tmp_path / "cache"
    root = resolve_split_root(None, cache_dir=cache, base_url=url, timeout=5)
    assert root == cache
    assert read_coco_split(root, "val", 3) == read_coco_split(folder, "val", 3)
    server.shutdown()  # offline now: the verified cache is enough
    assert resolve_split_root(None, cache_dir=cache, base_url=url, timeout=1) == cache
    (cache / "pascal" / "val" / "fold1.txt").write_text("2007_000001__06\n")  # tampered cache
    with pytest.raises(SplitChecksumError, match=r"fold1.txt: SHA-256 .* differs .*--splitpath"):
        resolve_split_root(None, cache_dir=cache, base_url=url, timeout=1)


def test_fetch_url_from_environment(served, tmp_path, monkeypatch):
    _, url, _ = served
    monkeypatch.setenv(splits.SPLITS_URL_ENV, url)
    assert (resolve_split_root(None, cache_dir=tmp_path / "c", timeout=5) / "coco" / "trn" / "fold0.pkl").is_file()


def test_fetched_file_with_wrong_checksum_is_not_written(served, tmp_path):
    folder, url, _ = served
    (folder / "coco" / "trn" / "fold2.pkl").write_bytes(b"\x80\x03}q\x00.")  # server now sends another file
    cache = tmp_path / "cache"
    with pytest.raises(SplitChecksumError, match="fold2.pkl: SHA-256 .* nothing was written"):
        resolve_split_root(None, cache_dir=cache, base_url=url, timeout=5)
    assert not (cache / "coco" / "trn" / "fold2.pkl").exists()


def test_offline_error_says_where_to_put_the_files(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(SplitNotFoundError) as err:
        resolve_split_root(None, cache_dir=cache, base_url="http://127.0.0.1:9", timeout=2)
    assert "--splitpath" in str(err.value) and str(cache) in str(err.value)


class _Payload:
    """Pickles to a call of os.system; unpickling it with pickle.load would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_tampered_pickle_never_runs_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    folder = tmp_path / "coco" / "val"
    folder.mkdir(parents=True)
    with open(folder / "fold0.pkl", "wb") as f:
        pickle.dump({0: ["val2014/a.jpg", "val2014/b.jpg"], 1: payload(marker)}, f)
    with pytest.raises(UnsafePickleError, match=r"fold0.pkl: refusing to load global"):
        read_coco_split(tmp_path, "val", 0)
    assert not marker.exists()


def test_pickle_of_wrong_shape(tmp_path):
    folder = tmp_path / "coco" / "trn"
    folder.mkdir(parents=True)
    for bad, match in (([1, 2], "expected a dict"), ({"0": ["a.jpg"]}, "class key '0'"),
                       ({80: ["a.jpg"]}, "class key 80"), ({0: "a.jpg"}, "list of image names")):
        with open(folder / "fold1.pkl", "wb") as f:
            pickle.dump(bad, f)
        with pytest.raises(SplitError, match=match):
            read_coco_split(tmp_path, "trn", 1)
    (folder / "fold1.pkl").write_bytes(b"garbage")
    with pytest.raises(SplitError, match="not a valid split pickle"):
        read_coco_split(tmp_path, "trn", 1)


def test_pascal_lines(tmp_path):
    folder = tmp_path / "pascal" / "val"
    folder.mkdir(parents=True)
    (folder / "fold0.txt").write_text("2007_000033__01\n2008_000002__05\n")
    assert read_pascal_split(tmp_path, "val", 0) == [("2007_000033", 0), ("2008_000002", 4)]
    (folder / "fold0.txt").write_text("2007_000033_01\n")
    with pytest.raises(SplitError, match="fold0.txt:1: expected 'IMAGE__CC'"):
        read_pascal_split(tmp_path, "val", 0)
    (folder / "fold0.txt").write_text("\n\n")
    with pytest.raises(SplitError, match="is empty"):
        read_pascal_split(tmp_path, "val", 0)
    with pytest.raises(ValueError, match="fold must be"):
        read_pascal_split(tmp_path, "val", 4)


def test_fss_lists_read_with_universal_newlines(tmp_path):
    folder = tmp_path / "fss"
    folder.mkdir()
    (folder / "test.txt").write_bytes(b"bus\r\nab_wheel\r\nabe's_flyingfish\r\n")  # CRLF, as HSNet's test.txt
    (folder / "val.txt").write_bytes(b"zucchini\nthree-toed_sloth")  # no final newline: the last name is kept
    assert read_fss_split(tmp_path, "test") == ["bus", "ab_wheel", "abe's_flyingfish"]
    assert read_fss_split(tmp_path, "val") == ["zucchini", "three-toed_sloth"]


@pytest.mark.parametrize("content, match", [
    (b"bus\n\nab_wheel\n", r"trn.txt:2: expected one class folder name"),
    (b"bus\nab wheel\n", r"trn.txt:2: .*'ab wheel'"),
    (b"bus\n../etc\n", r"trn.txt:2"),
    (b"bus\nbus\n", r"trn.txt: class\(es\) \['bus'\] listed more than once"),
    (b"", r"trn.txt is empty"),
    (b"\xff\xfe\n", r"cannot read split list .*trn.txt"),
])
def test_malformed_fss_list_names_the_file(tmp_path, content, match):
    (tmp_path / "fss").mkdir()
    (tmp_path / "fss" / "trn.txt").write_bytes(content)
    with pytest.raises(SplitError, match=match):
        read_fss_split(tmp_path, "trn")


def test_fss_list_longer_than_hsnets_split_is_refused(tmp_path):
    (tmp_path / "fss").mkdir()
    (tmp_path / "fss" / "val.txt").write_text("".join(f"c{i:03d}\n" for i in range(241)))
    with pytest.raises(SplitError, match="val.txt lists 241 classes; HSNet's FSS-1000 val split has 240"):
        read_fss_split(tmp_path, "val")
    with pytest.raises(SplitNotFoundError, match="test.txt not found"):
        read_fss_split(tmp_path, "test")
