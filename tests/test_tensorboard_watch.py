"""Babysitting a run in TensorBoard: the released scalar events unchanged, the watch summaries written
(:mod:`engine.run_watch`), and a finished 3-epoch toy run opened the way a user does: ``tensorboard`` on a free
port, its HTTP data API serving every tag, and (where Debian's ``chromium`` is installed, as in CI) the
Scalars, Images and HParams tabs loaded headless, each checked to have rendered, with a screenshot of each
kept under ``$IMRHSNET_TEST_ARTEFACTS`` (default ``<repo>/.cache/test-artefacts``) as a test artefact."""
from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pytest
import torch

import train
from common.logger import TensorBoardWriter
from common.paths import CACHE_ROOT
from common.tb_images import TILE, outline, watch_panel
from common.tb_summaries import hparam_values, markdown_table, scalar_summary
from engine import training
from engine.args import parse_args
from engine.run_watch import RunWatch, shown_episode_positions
from tests.headless_chromium import HeadlessChromium, find_chromium
from tests.test_bad_input import NAMES, make_mini_pascal
from tests.train_helpers import read_scalar_events

NITER = 3  # TensorBoard draws no line through two points of a chart with "Ignore outliers" on (its default)
NSHOWN = 3  # the toy run's validation episodes, all shown
WATCH_SCALARS = ("train/lr", "train/episodes_per_s", "train/epoch_s", "val/episodes_per_s", "val/epoch_s",
                 "val/best_miou", "train/nonfinite_skipped_steps", "memory/cpu_peak_rss_mib")
RELEASED = {"data/loss": ("trn_loss", "val_loss"), "data/miou": ("trn_miou", "val_miou"),
            "data/fb_iou": ("trn_fb_iou", "val_fb_iou")}
ARTEFACTS = Path(os.environ.get("IMRHSNET_TEST_ARTEFACTS", CACHE_ROOT / "test-artefacts")) / "tensorboard"
CHROMIUM = find_chromium()


# ---------------------------------------------------------------------------------------------------------
# the parts, without training
# ---------------------------------------------------------------------------------------------------------
def test_hparam_values_keep_what_the_dashboard_can_show():
    values = hparam_values({"lr": 4e-4, "bsz": 20, "amp": False, "masking": "released", "nepisodes": None,
                            "logpath": Path("/runs/a"), "folds": [0, 1], "cam_manifests": {"a": "b"},
                            "bad": float("nan")})
    assert values == {"amp": False, "bsz": 20.0, "folds": "[0, 1]", "logpath": "/runs/a", "lr": 4e-4,
                      "masking": "released"}
    assert markdown_table([("--a", "x|y")]).splitlines()[-1] == "| --a | x\\|y |"


def test_watch_panel_is_three_captioned_tiles():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(3, 64, 64, generator=generator)
    mask = torch.zeros(64, 64)
    mask[10:40, 20:50] = 1
    inputs = (image, torch.rand(8, 8, generator=generator), image, mask, torch.zeros(64, 64))
    panel = watch_panel(*inputs, title="aeroplane (0)   IoU 53.2   val episode 12")
    assert panel.dtype == np.uint8 and panel.shape[1:] == (3 * TILE, 3) and TILE < panel.shape[0] < TILE + 60
    header = panel[: panel.shape[0] - TILE]
    assert (header < 128).any(), "no title or captions drawn"
    untitled = watch_panel(*inputs, title="")
    assert not np.array_equal(untitled[: header.shape[0]], header)
    assert np.array_equal(untitled[header.shape[0]:], panel[header.shape[0]:])  # the same tiles
    assert torch.equal(inputs[0], image)  # inputs unchanged
    square = np.zeros((7, 7), np.uint8)
    square[1:6, 1:6] = 1
    assert outline(square, width=1).sum() == 16 and not outline(square, width=1)[3, 3]


def test_shown_episodes_are_spread_over_classes():
    assert shown_episode_positions([3, 3, 5, 3, 7, 9, 9], count=4) == [0, 2, 4, 5]
    assert shown_episode_positions([3, 3, 3, 3, 3], count=4) == [0, 1, 2, 3]
    assert shown_episode_positions([1, 2], count=4) == [0, 1]


class _Recorder:
    """A writer that keeps (step, summary) pairs."""

    enabled = True

    def __init__(self) -> None:
        self.summaries: list[tuple[int, Any]] = []

    def add_summary(self, summary: Any, step: int) -> None:
        self.summaries.append((step, summary))

    def flush(self) -> None:
        pass

    def scalars(self) -> dict[str, float]:
        return {v.tag: v.simple_value for _, s in self.summaries for v in s.value if v.HasField("simple_value")}


def test_skipped_optimizer_steps_are_counted_and_a_failed_run_says_so():
    # the fp16 GradScaler skips optimizer.step() when the gradients overflowed: 3 batches, 2 steps -> 1 skipped
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=1e-3)
    recorder = _Recorder()
    args = argparse.Namespace(lr=1e-3, backbone="vgg16")
    watch = RunWatch(recorder, args, optimizer, torch.device("cpu"), val_order=[0], val_classes=[0],
                     val_batch_size=1, class_names={0: "aeroplane"})
    result = type("Result", (), {"episodes": 6, "loss": 1.0, "miou": 2.0, "fb_iou": 3.0})()
    watch.begin_epoch()
    with watch.timed("train"):
        for _ in range(2):
            param.grad = torch.ones(1)
            optimizer.step()
    watch.log_epoch(0, result, result, best_miou=2.0, train_batches=3)
    watch.finish("nonfinite_loss", 1)
    watch.close()
    scalars = recorder.scalars()
    assert scalars["train/nonfinite_skipped_steps"] == 1 and scalars["val/best_miou"] == 2.0
    assert scalars["train/lr"] == pytest.approx(1e-3) and scalars["train/episodes_per_s"] > 0
    assert "val/epoch_s" not in scalars  # not timed
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    (end,) = [v for _, s in recorder.summaries for v in s.value if v.tag == "_hparams_/session_end_info"]
    status = HParamsPluginData.FromString(end.metadata.plugin_data.content).session_end_info.status
    assert status == Status.Value("STATUS_FAILURE")  # a run stopped by a non-finite loss


def test_a_resume_drops_the_redone_epochs_of_the_new_tags_too(tmp_path):
    first = TensorBoardWriter(tmp_path)
    for epoch in range(3):
        first.add_summary(scalar_summary("train/lr", 1.0 + epoch), epoch)
    first.close()
    resumed = TensorBoardWriter(tmp_path, purge_step=1)
    for epoch in (1, 2, 3):
        resumed.add_summary(scalar_summary("train/lr", 10.0 + epoch), epoch)
    resumed.close()
    assert read_scalar_events(tmp_path / "tbd" / "runs")["train/lr"] == [(0, 1.0), (1, 11.0), (2, 12.0), (3, 13.0)]


# ---------------------------------------------------------------------------------------------------------
# a 3-epoch toy run, and the same run without the watch summaries (the released events)
# ---------------------------------------------------------------------------------------------------------
def _make_toy_pascal(root: Path) -> Path:
    """:func:`make_mini_pascal` cut to 3 training episodes (one image in each of folds 1-3's lists, one class)."""
    make_mini_pascal(root)
    for fold, name in zip((1, 2, 3), NAMES):
        (root / "splits" / "pascal" / "trn" / f"fold{fold}.txt").write_text(f"{name}__07\n")
    return root


def _train(root: Path, run_dir: Path) -> dict[str, Any]:
    argv = ["--datapath", str(root), "--splitpath", str(root / "splits"), "--img-size", "64", "--backbone",
            "resnet50", "--backbone-weights", "none", "--device", "cpu", "--nworker", "0", "--bsz", "3",
            "--nepisodes", str(NSHOWN), "--seed", "5", "--niter", str(NITER), "--logpath", str(run_dir)]
    return train.main(parse_args("train", argv))


@pytest.fixture(scope="module")
def toy_runs(module_tmp) -> dict[str, Path]:
    """{"watched": run folder, "released": the same run with the watch summaries off}."""
    tmp = module_tmp("toy")
    root = _make_toy_pascal(tmp / "data")
    runs = {"watched": tmp / "logs" / "watched", "released": tmp / "released" / "run"}
    assert _train(root, runs["watched"])["status"] == "finished"
    patch = pytest.MonkeyPatch()
    patch.setattr(training, "RunWatch", lambda *a, **k: RunWatch(*a, **{**k, "enabled": False}))
    try:
        assert _train(root, runs["released"])["status"] == "finished"
    finally:
        patch.undo()
    for run_dir in runs.values():  # the checkpoints are not looked at: keep the scratch disk small
        for name in ("best_model.pt", "last.pt"):
            (run_dir / name).unlink()
    return runs


def _records(folder: Path) -> list[tuple[int, bytes, int]]:
    """(step, serialized summary, session-log status) of every event of the files in ``folder``, file-version
    record left out, in file order; wall times left out."""
    from tensorboardX.proto.event_pb2 import Event

    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 16 + length
            if not event.HasField("file_version"):
                out.append((event.step, event.summary.SerializeToString(), event.session_log.status))
    return out


def _event_folders(run_dir: Path) -> set[str]:
    events = run_dir / "tbd" / "runs"
    return {p.parent.relative_to(events).as_posix() for p in events.rglob("events.out.tfevents.*")}


@pytest.mark.slow
def test_the_released_tags_are_the_same_events(toy_runs):
    from tensorboardX.proto.summary_pb2 import Summary

    released_folders = {f"{tag}/{split}" for tag, splits in RELEASED.items() for split in splits}
    assert _event_folders(toy_runs["released"]) - {"."} == released_folders
    assert _event_folders(toy_runs["watched"]) == released_folders | {"."}  # new tags: in the root folder only
    for folder in sorted(released_folders):
        watched = _records(toy_runs["watched"] / "tbd" / "runs" / folder)
        assert [step for step, _, _ in watched] == list(range(NITER)), folder
        assert watched == _records(toy_runs["released"] / "tbd" / "runs" / folder), folder
    root_tags = {value.tag for _, summary, _ in _records(toy_runs["watched"] / "tbd" / "runs")
                 for value in Summary.FromString(summary).value}
    assert not root_tags & set(RELEASED), "a released tag written into the root folder"


@pytest.mark.slow
def test_the_watched_run_has_every_new_summary(toy_runs):
    from tensorboardX.proto.summary_pb2 import Summary

    by_tag: dict[str, list[tuple[int, Any]]] = {}
    for step, data, _ in _records(toy_runs["watched"] / "tbd" / "runs"):
        for value in Summary.FromString(data).value:
            by_tag.setdefault(value.tag, []).append((step, value))
    for tag in WATCH_SCALARS:
        assert [step for step, _ in by_tag[tag]] == list(range(NITER)), tag
    assert [v.simple_value for _, v in by_tag["train/lr"]] == pytest.approx([4e-4] * NITER)
    images = sorted(tag for tag in by_tag if tag.startswith("val/episode_"))
    assert images == [f"val/episode_{i:04d}" for i in range(NSHOWN)]  # the same episodes every epoch
    for tag in images:
        assert [step for step, _ in by_tag[tag]] == list(range(NITER))
    flags = by_tag["run/flags"][0][1].tensor.string_val[0].decode()
    assert "| --backbone | resnet50 |" in flags and "| --lr | 0.0004 |" in flags
    final = by_tag["run/final"][0][1].tensor.string_val[0].decode()
    assert "| status | finished |" in final and f"| epochs finished | {NITER} |" in final
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(by_tag)


# ---------------------------------------------------------------------------------------------------------
# TensorBoard, as a user starts it: `tensorboard --logdir logs/`
# ---------------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _request(url: str, body: Optional[dict[str, Any]] = None) -> Optional[Any]:
    """JSON from ``url`` (POSTed ``body`` as JSON when given); None when the server does not answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())
    except OSError:
        return None


@pytest.fixture(scope="module")
def tensorboard(toy_runs) -> Iterator[str]:
    """``tensorboard --logdir`` the watched run's ``logs/`` folder on a free port; its base URL. Stopped at the
    end of the module's tests, also when one failed."""
    executable = Path(sys.executable).parent / "tensorboard"
    assert executable.is_file(), "tensorboard is a runtime requirement (requirements.txt)"
    port = _free_port()
    proc = subprocess.Popen([str(executable), "--logdir", str(toy_runs["watched"].parent), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 90
        while time.monotonic() < end and not _request(f"{base}/data/plugin/scalars/tags"):
            assert proc.poll() is None, "tensorboard exited"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


SESSION = "watched/tbd/runs"  # the run as TensorBoard names it under --logdir logs/


@pytest.mark.slow
def test_tensorboard_serves_every_tag(tensorboard):
    data = f"{tensorboard}/data/plugin"
    scalars = _request(f"{data}/scalars/tags")
    assert scalars, "tensorboard did not answer within 90 s"
    assert set(WATCH_SCALARS) <= set(scalars[SESSION]), scalars[SESSION]
    for tag, splits in RELEASED.items():
        for split in splits:
            assert tag in scalars[f"{SESSION}/{tag}/{split}"]
    for tag in WATCH_SCALARS:
        points = _request(f"{data}/scalars/scalars?" + urllib.parse.urlencode({"run": SESSION, "tag": tag}))
        assert [step for _, step, _ in points] == list(range(NITER)), tag

    images = _request(f"{data}/images/tags")[SESSION]
    assert sorted(images) == [f"val/episode_{i:04d}" for i in range(NSHOWN)]
    for tag in images:
        entries = _request(f"{data}/images/images?" + urllib.parse.urlencode({"run": SESSION, "tag": tag}))
        assert [entry["step"] for entry in entries] == list(range(NITER)), tag
    assert sorted(_request(f"{data}/text/tags")[SESSION]) == ["run/final", "run/flags"]

    experiment = _request(f"{data}/hparams/experiment", {"experimentName": ""})
    flags = {info["name"] for info in experiment["hparamInfos"]}
    assert {"backbone", "lr", "bsz", "img_size", "masking", "seed", "niter"} <= flags
    groups = _request(f"{data}/hparams/session_groups", {
        "experimentName": "", "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                                                  "STATUS_RUNNING"],
        "colParams": [], "startIndex": 0, "sliceSize": 100})["sessionGroups"]
    assert [group["name"] for group in groups] == [SESSION]
    assert groups[0]["hparams"]["backbone"] == "resnet50" and groups[0]["hparams"]["lr"] == pytest.approx(4e-4)
    metrics = {(m["name"].get("group", ""), m["name"]["tag"]): m for m in groups[0]["metricValues"]}
    assert metrics[("", "val/best_miou")]["trainingStep"] == NITER - 1
    assert ("data/miou/val_miou", "data/miou") in metrics


# ---------------------------------------------------------------------------------------------------------
# ... and in a browser
# ---------------------------------------------------------------------------------------------------------
DEEP = r"""
const deep = (root, out = []) => { for (const el of root.querySelectorAll('*')) { out.push(el);
  if (el.shadowRoot) deep(el.shadowRoot, out); } return out; };
const inside = (el) => deep(el.shadowRoot || el);
const dashboard = (name) => deep(document).find(el => el.tagName === name);
const deepText = (el) => { const parts = []; const visit = (node) => { for (const child of node.childNodes) {
  if (child.nodeType === 3) parts.push(child.textContent);
  else if (child.nodeType === 1 && child.tagName !== 'STYLE') { if (child.shadowRoot) visit(child.shadowRoot);
  visit(child); } } }; if (el.shadowRoot) visit(el.shadowRoot); visit(el); return parts.join(' '); };
"""


def _js(body: str) -> str:
    """A JavaScript expression: ``body`` (statements ending in a return) with the :data:`DEEP` helpers."""
    return f"(() => {{ {DEEP} {body} }})()"


# [[tag, lines drawn], ...] of the Scalars tab's cards
SCALAR_CARDS = _js("""const d = dashboard('TF-SCALAR-DASHBOARD'); if (!d) return null;
  return inside(d).filter(el => el.tagName === 'TF-SCALAR-CARD').map(card => [card.tag, inside(card).filter(
    el => el.tagName === 'path' && (el.getAttribute('class') || '').split(' ').includes('line')
          && (el.getAttribute('d') || '').length > 3).length]);""")
# [[tag, [widths of the loaded pictures]], ...] of the Images tab's cards
IMAGE_CARDS = _js("""const d = dashboard('TF-IMAGE-DASHBOARD'); if (!d) return null;
  return inside(d).filter(el => el.tagName === 'TF-IMAGE-LOADER').map(card => [card.tag, inside(card).filter(
    el => el.tagName === 'IMG' && el.complete && el.naturalWidth > 0).map(img => img.naturalWidth)]);""")
# the text of the HParams tab's table
HPARAMS_TEXT = _js("""const d = dashboard('TF-HPARAMS-TABLE-VIEW'); return d ? deepText(d) : null;""")


def _scalars_rendered(cards: Optional[list[list[Any]]], tags: list[str]) -> bool:
    drawn = {tag for tag, lines in cards or [] if lines > 0}
    return set(tags) <= drawn


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium; "
                                              "CI installs it); the HTTP API test above still runs")
def test_the_tabs_render_in_a_headless_browser(tensorboard):
    expected_scalars = list(WATCH_SCALARS) + list(RELEASED)
    with HeadlessChromium(CHROMIUM) as browser:
        regex = "|".join(expected_scalars)
        browser.navigate(f"{tensorboard}/#scalars&tagFilter={urllib.parse.quote(regex)}")
        cards = browser.wait_for(f"(() => {{ const c = {SCALAR_CARDS}; "
                                 f"return ({json.dumps(expected_scalars)}).every(t => (c || []).some("
                                 f"([tag, n]) => tag === t && n > 0)) ? c : null; }})()", timeout=60)
        browser.screenshot(ARTEFACTS / "scalars.png")
        assert _scalars_rendered(cards, expected_scalars), browser.evaluate(SCALAR_CARDS)

        browser.navigate(f"{tensorboard}/#images")
        images = browser.wait_for(f"(() => {{ const c = {IMAGE_CARDS}; "
                                  f"return c && c.length === {NSHOWN} && c.every(([, w]) => w.length > 0) ? c : null; "
                                  "})()", timeout=60)
        browser.screenshot(ARTEFACTS / "images.png")
        assert images, browser.evaluate(IMAGE_CARDS)
        assert sorted(tag for tag, _ in images) == [f"val/episode_{i:04d}" for i in range(NSHOWN)]
        assert all(widths == [3 * TILE] for _, widths in images), images

        browser.navigate(f"{tensorboard}/#hparams")
        text = browser.wait_for(f"(() => {{ const t = {HPARAMS_TEXT}; "
                                "return t && t.includes('resnet50') && t.includes('watched') ? t : null; })()",
                                timeout=60)
        browser.screenshot(ARTEFACTS / "hparams.png")
        assert text, browser.evaluate(HPARAMS_TEXT)
