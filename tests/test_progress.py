"""common.progress: a line at a fixed interval without a terminal, a bar with logging above it on one, the
environment variables; and train.py's progress lines with its output redirected to a file."""
from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from common import progress as pg
from common.errors import FlagError
from tests.train_helpers import make_tiny_inputs


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clean_env(monkeypatch):
    for name in (pg.MODE_VARIABLE, pg.INTERVAL_VARIABLE, "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_lines_come_at_the_interval_with_rate_eta_and_stats(clean_env, caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger=pg.__name__):
        with pg.Progress(10, "[Epoch: 03] train", unit="batches", rate_unit="episodes", mode="lines", interval=30,
                         stats=lambda: {"mIoU": 23.456}, clock=clock) as progress:
            for _ in range(10):
                clock.now += 10  # 10 s per batch of 4 episodes
                progress.update(items=4)
    lines = [r.getMessage() for r in caplog.records if r.name == pg.__name__]
    assert len(lines) == 3 == progress.lines_written  # at 30 s, 60 s, 90 s
    assert lines[0] == ("[Epoch: 03] train: 3/10 batches (30%), 0.40 episodes/s, elapsed 30s, ETA 1m10s, "
                        "mIoU 23.46")
    assert lines[2].startswith("[Epoch: 03] train: 9/10 batches (90%)") and "ETA 10s" in lines[2]


def test_interval_zero_reports_every_step_and_unknown_totals_have_no_eta(clean_env, caplog):
    clock = FakeClock()
    with caplog.at_level(logging.INFO, logger=pg.__name__):
        progress = pg.Progress(None, "unpack x.tar", unit="members", mode="lines", interval=0, clock=clock)
        for _ in range(3):
            clock.now += 1
            progress.update()
    lines = [r.getMessage() for r in caplog.records if r.name == pg.__name__]
    assert lines == [f"unpack x.tar: {n} members, 1.00 members/s, elapsed {n}s" for n in (1, 2, 3)]


def test_a_resumed_download_counts_its_rate_from_this_session(clean_env):
    clock = FakeClock()
    progress = pg.Progress(100.0, "download a.zip", unit="MB", mode="lines", initial=40.0, clock=clock)
    clock.now += 10
    progress.update(20.0)
    assert progress.rate() == pytest.approx(2.0) and progress.eta() == pytest.approx(20.0)
    assert progress.line().startswith("download a.zip: 60/100 MB (60%), 2.00 MB/s")


def test_off_and_disabled_report_nothing(clean_env, caplog):
    clean_env.setenv(pg.MODE_VARIABLE, "off")
    with caplog.at_level(logging.INFO, logger=pg.__name__):
        for progress in (pg.Progress(3, "a", interval=0), pg.Progress(3, "b", mode="lines", interval=0, enabled=False)):
            for _ in range(3):
                progress.update()
    assert not [r for r in caplog.records if r.name == pg.__name__]


def test_environment_variables_choose_mode_and_interval(clean_env):
    assert pg.progress_mode(stream=io.StringIO()) == "lines"  # not a terminal
    assert pg.progress_interval() == pg.DEFAULT_INTERVAL == 30
    clean_env.setenv(pg.INTERVAL_VARIABLE, "0.5")
    clean_env.setenv(pg.MODE_VARIABLE, "bar")
    assert pg.progress_interval() == 0.5 and pg.progress_mode(stream=io.StringIO()) == "bar"
    clean_env.setenv(pg.INTERVAL_VARIABLE, "soon")
    with pytest.raises(FlagError, match=pg.INTERVAL_VARIABLE):
        pg.progress_interval()
    clean_env.setenv(pg.MODE_VARIABLE, "loud")
    with pytest.raises(FlagError, match=pg.MODE_VARIABLE):
        pg.progress_mode()
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"), (pg.MODE_VARIABLE, "lines")):
        clean_env.setenv(name, value)
    assert pg.progress_mode() == "off"  # torchrun: rank 0 reports alone


def test_a_bad_environment_variable_is_a_one_line_error(clean_env, capsys):
    from common.cli import EXIT_BAD_INPUT, run_cli

    clean_env.setenv(pg.INTERVAL_VARIABLE, "-1")
    assert run_cli(lambda: pg.Progress(3, "x"), "train.py") == EXIT_BAD_INPUT
    assert capsys.readouterr().err == (f"train.py: error: environment variable {pg.INTERVAL_VARIABLE}='-1': expected "
                                       "a number of seconds >= 0\n")


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_log_lines_are_written_above_the_bar_and_handlers_restored(clean_env, capsys):
    terminal = TtyStream()
    handler = logging.StreamHandler(terminal)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with pg.Progress(2, "test", mode="bar") as progress:
            assert isinstance(handler.stream, pg._AboveTheBar)
            logging.getLogger("test").warning("[Batch: 0001/0002] mIoU: 1.00")
            progress.update()
        assert handler.stream is terminal
    finally:
        root.removeHandler(handler)
    assert terminal.getvalue() == "[Batch: 0001/0002] mIoU: 1.00\n"
    assert "test" in capsys.readouterr().err  # the bar itself


def test_track_counts_items_after_each_element_and_closes(clean_env):
    clock = FakeClock()
    progress = pg.Progress(2, "x", rate_unit="episodes", mode="lines", clock=clock)
    seen = []
    for batch in pg.track([[1, 2], [3]], progress, items=len):
        seen.append(progress.done)  # the element's step is counted once its work is done
    assert seen == [0, 1] and progress.done == 2 and progress.items == 3


def test_format_duration():
    assert [pg.format_duration(s) for s in (0, 40.4, 125, 3723, float("nan"))] == ["0s", "40s", "2m05s",
                                                                                     "1h02m03s", "?"]


@pytest.mark.slow
def test_train_py_redirected_to_a_file_prints_progress_lines_with_an_eta(synthetic_root, tmp_path, repo_root):
    """The real train.py in a subprocess, stdout and stderr into a file (as under nohup), a line every step."""
    tiny = make_tiny_inputs(synthetic_root, tmp_path / "tiny")
    output = tmp_path / "train.out"
    env = {**os.environ, pg.INTERVAL_VARIABLE: "0", pg.MODE_VARIABLE: "auto"}
    command = [sys.executable, "train.py", *tiny.argv("--logpath", str(tmp_path / "run"), "--bsz", "2",
                                                      "--nepisodes", "4", "--niter", "1", "--seed", "0")]
    with open(output, "w") as out:
        finished = subprocess.run(command, cwd=repo_root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, timeout=600)
    text = output.read_text()
    assert finished.returncode == 0, text[-3000:]
    progress = re.findall(r"^\[Epoch: 00\] (train|val): (\d+)/(\d+) batches .* episodes/s, elapsed \S+, ETA \S+, "
                          r"loss \S+, mIoU \S+$", text, flags=re.M)
    trains = [p for p in progress if p[0] == "train"]
    assert len(trains) >= 3 and [int(p[1]) for p in trains] == list(range(1, len(trains) + 1))
    assert [p for p in progress if p[0] == "val"]
    assert "[Epoch: 00] [Batch: 0001/" in text and "\x1b" not in text and "\r" not in text  # no bar, no escapes
    assert "ETA" in (tmp_path / "run" / "log.txt").read_text()
