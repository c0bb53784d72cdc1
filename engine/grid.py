"""The paper's grid of training runs as one folder: its cells, their ``train.py``/``test.py`` arguments, what is done.

A grid is benchmarks x backbones x folds (PASCAL-5i and COCO-20i x VGG16 and ResNet50 x 4 folds: 16 training runs),
then one test sweep per (benchmark, backbone) over its folds and shots. Its folder::

    GRID/grid.json                 what the grid is (written once; a relaunch must ask for the same grid)
    GRID/jobs.json                 every job submitted for it: cell, job id, executor, time (newest last)
    GRID/runs/pascal_resnet50_fold0/   a train.py run folder per cell (log.txt, args.json, last.pt, ...)
    GRID/tests/pascal_resnet50/    a test.py run folder per (benchmark, backbone): table.md, results.json, ...
    GRID/tables.md                 every test sweep's table, in the paper's layout with intervals
    GRID/submitit/                 submitit's job files and each job's stdout/stderr (%j_0_log.out)

Each cell runs with the released settings of its benchmark (PASCAL-5i: ``--lr 4e-4 --bsz 40 --stage 2``; COCO-20i:
``--lr 2e-4 --bsz 20 --stage 3``) unless the grid's ``train.py`` flags give them, and with ``--seed 0`` unless they
give one (a grid is reproducible: the same grid run twice gives the same numbers). Submitting (:mod:`engine.cluster`)
and the jobs themselves (:mod:`engine.grid_jobs`) live elsewhere; this module only knows folders and arguments.
"""
from __future__ import annotations

import argparse
import datetime
import json
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from common.errors import UserInputError
from common.io import atomic_write_text
from data.benchmarks import FOLD_BENCHMARKS
from engine.args import FOLD_PLACEHOLDER, build_parser, parse_args
from engine.run_checkpoint import BEST_NAME, epochs_finished
from engine.run_folder import ARGS_NAME, LOG_NAME, flag_differences

GRID_NAME = "grid.json"
JOBS_NAME = "jobs.json"
TABLES_NAME = "tables.md"
RUNS_DIR = "runs"
TESTS_DIR = "tests"
SUBMITIT_DIR = "submitit"
FORMAT_VERSION = 1

# The released train.py settings per benchmark (README "Training"); FSS-1000 has none (train.py's defaults).
RELEASED_SETTINGS: dict[str, dict[str, str]] = {
    "pascal": {"--lr": "4e-4", "--bsz": "40", "--stage": "2"},
    "coco": {"--lr": "2e-4", "--bsz": "20", "--stage": "3"},
    "fss": {},
}
GRID_SEED = "0"
# Flags the grid sets per cell; the train.py flags given to the grid must leave them out.
OWNED_BY_GRID = ("benchmark", "backbone", "fold", "logpath", "resume")
# train.py arguments that the test sweep of a (benchmark, backbone) takes over from its cells.
CARRIED_TO_TEST = ("datapath", "splitpath", "traincampath", "valcampath", "img_size", "masking", "stage", "device",
                   "nworker", "amp", "tf32", "compile", "strict_masks")


class GridError(UserInputError, ValueError):
    """The grid folder or a cell's run folder cannot be used as asked."""


@dataclass(frozen=True)
class GridSpec:
    """What a grid is: its cells, the ``train.py`` flags they share and the test sweep after them."""

    benchmarks: tuple[str, ...]
    backbones: tuple[str, ...]
    folds: tuple[int, ...]
    train_flags: tuple[str, ...] = ()
    nshots: tuple[int, ...] = (1, 5)
    test_nepisodes: Optional[int] = None  # test.py's default (released: 1000) when None
    test_bsz: Optional[int] = None
    bootstrap: Optional[int] = None

    def as_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "GridSpec":
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    benchmark: str
    backbone: str
    fold: int

    @property
    def name(self) -> str:
        if self.benchmark not in FOLD_BENCHMARKS:
            return f"{self.benchmark}_{self.backbone}"
        return f"{self.benchmark}_{self.backbone}_fold{self.fold}"

    def run_dir(self, grid: Path) -> Path:
        return grid / RUNS_DIR / self.name


@dataclass(frozen=True)
class TestGroup:
    """The test sweep of one (benchmark, backbone): every fold of the grid, every shot."""

    benchmark: str
    backbone: str
    folds: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.benchmark}_{self.backbone}"

    def run_dir(self, grid: Path) -> Path:
        return grid / TESTS_DIR / self.name

    def cells(self) -> list[Cell]:
        return [Cell(self.benchmark, self.backbone, fold) for fold in self.folds]


def expand(spec: GridSpec) -> list[Cell]:
    """The cells, benchmark-major: ``pascal x vgg16 x 0..3``, then ``pascal x resnet50``, ... (FSS-1000: one cell
    per backbone, it has no folds)."""
    return [cell for group in test_groups(spec) for cell in group.cells()]


def test_groups(spec: GridSpec) -> list[TestGroup]:
    """One test sweep per (benchmark, backbone), in the order of :func:`expand`."""
    return [TestGroup(b, k, spec.folds if b in FOLD_BENCHMARKS else (0,))
            for b in spec.benchmarks for k in spec.backbones]


def given_flags(argv: Sequence[str], script: str = "train") -> set[str]:
    """The destinations of the flags present in ``argv`` (``--lr 1e-3`` -> ``{"lr"}``), per ``script``'s parser."""
    actions = build_parser(script)._option_string_actions  # noqa: SLF001 - argparse keeps no public map
    flags = [token.split("=", 1)[0] for token in argv if token.startswith("--")]
    return {actions[flag].dest for flag in flags if flag in actions}


def check_train_flags(argv: Sequence[str]) -> None:
    """The grid's ``train.py`` flags leave out what the grid sets per cell."""
    owned = sorted(given_flags(argv) & set(OWNED_BY_GRID))
    if owned:
        raise GridError(f"the grid sets {', '.join('--' + name for name in owned)} itself (one run folder per "
                        f"cell; give the grid's --benchmark/--backbone/--fold, and --grid-dir for the folder); "
                        f"leave {'them' if len(owned) > 1 else 'it'} out of the train.py flags")


def cell_train_argv(spec: GridSpec, cell: Cell, grid: Path) -> list[str]:
    """The ``train.py`` flags of a cell: benchmark, backbone and fold, the released settings of its benchmark and
    ``--seed 0`` where the grid's flags leave them out, the grid's flags, and its run folder."""
    given = given_flags(spec.train_flags)
    argv = ["--benchmark", cell.benchmark, "--backbone", cell.backbone]
    if cell.benchmark in FOLD_BENCHMARKS:
        argv += ["--fold", str(cell.fold)]
    for flag, value in RELEASED_SETTINGS[cell.benchmark].items():
        if flag[2:] not in given:
            argv += [flag, value]
    if "seed" not in given:
        argv += ["--seed", GRID_SEED]
    return argv + list(spec.train_flags) + ["--logpath", str(cell.run_dir(grid).absolute())]


def _as_flags(args: argparse.Namespace, names: Sequence[str]) -> list[str]:
    """Resolved ``train.py`` arguments back into flags (``img_size=64`` -> ``--img-size 64``)."""
    actions = {action.dest: action for action in build_parser("test")._actions if action.option_strings}
    argv: list[str] = []
    for name in names:
        value, flag = getattr(args, name, None), actions[name].option_strings[0]
        if value is None or value is False:
            continue
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def group_test_argv(spec: GridSpec, group: TestGroup, grid: Path, cell_args: argparse.Namespace) -> list[str]:
    """The ``test.py`` flags of a group's sweep: its cells' data and model flags (``cell_args``, the resolved
    arguments of one of them), every fold and shot, ``--load`` the cells' ``best_model.pt`` through ``{fold}``."""
    name = Cell(group.benchmark, group.backbone, 0).name
    if group.benchmark in FOLD_BENCHMARKS:  # pascal_resnet50_fold{fold}
        name = name[: -len("0")] + FOLD_PLACEHOLDER
    load = (grid / RUNS_DIR / name).absolute()
    argv = ["--benchmark", group.benchmark, "--backbone", group.backbone, *_as_flags(cell_args, CARRIED_TO_TEST)]
    if group.benchmark in FOLD_BENCHMARKS:
        argv += ["--fold", *map(str, group.folds)]
    argv += ["--nshot", *map(str, spec.nshots), "--load", str(load / BEST_NAME)]
    for flag, value in (("--nepisodes", spec.test_nepisodes), ("--bsz", spec.test_bsz),
                        ("--bootstrap", spec.bootstrap)):
        if value is not None:
            argv += [flag, str(value)]
    return argv + ["--logpath", str(group.run_dir(grid).absolute())]


def resolve_cell(spec: GridSpec, cell: Cell, grid: Path) -> argparse.Namespace:
    """The cell's resolved ``train.py`` arguments (paths checked: a bad flag exits 2 naming it)."""
    return parse_args("train", cell_train_argv(spec, cell, grid))


# --- the grid folder ------------------------------------------------------------------------------------------

def read_spec(grid: Path) -> Optional[GridSpec]:
    """The grid ``grid/grid.json`` records (None without one)."""
    path = grid / GRID_NAME
    if not path.is_file():
        return None
    try:
        return GridSpec.from_json(json.loads(path.read_text())["spec"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GridError(f"cannot read {path} ({exc}); it is not a grid of this version: choose another --grid-dir")


def spec_differences(stored: GridSpec, spec: GridSpec) -> list[str]:
    """``"folds [0, 1, 2, 3] -> [0, 1]"`` for every field in which two grids differ."""
    old, new = stored.as_json(), spec.as_json()
    return [f"{key} {old[key]} -> {new[key]}" for key in old if old[key] != new.get(key)]


def check_grid_folder(grid: Path, spec: GridSpec) -> bool:
    """Whether ``grid`` already holds this grid (True: a relaunch) or nothing (False).

    Raises:
        GridError: it is a file, holds another grid (named differences), or holds something that is no grid.
    """
    if grid.exists() and not grid.is_dir():
        raise GridError(f"--grid-dir {grid} is a file; give a folder")
    stored = read_spec(grid)
    if stored is not None:
        differences = spec_differences(stored, spec)
        if differences:
            raise GridError(f"{grid} holds another grid ({'; '.join(differences)}); relaunch it with its own flags "
                            f"(launch.py status {grid} lists its cells), or choose another --grid-dir")
        return True
    if grid.is_dir() and any(grid.iterdir()):
        raise GridError(f"{grid} holds files but no {GRID_NAME}: it is not a grid folder; choose another --grid-dir")
    return False


def write_spec(grid: Path, spec: GridSpec, command: str) -> None:
    """Create the grid folder and its ``grid.json`` (once; a relaunch leaves it as it is)."""
    grid.mkdir(parents=True, exist_ok=True)
    if not (grid / GRID_NAME).exists():
        document = {"format_version": FORMAT_VERSION, "spec": spec.as_json(), "command": command,
                    "created": datetime.datetime.now().isoformat(timespec="seconds")}
        atomic_write_text(json.dumps(document, indent=2) + "\n", grid / GRID_NAME)


def check_cell_folder(run_dir: Path, args: argparse.Namespace) -> bool:
    """Whether a cell's run folder holds its own run (True: the job resumes it) or nothing (False).

    Raises:
        GridError: the folder holds another run (a test run, or a training run with other flags, named) or files
            without a run; nothing in it is changed.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise GridError(f"cell run folder {run_dir} is a file; move it away")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return False
    try:
        stored = json.loads((run_dir / ARGS_NAME).read_text())
    except (OSError, ValueError):
        raise GridError(f"cell run folder {run_dir} holds files but no readable {ARGS_NAME} of a run; move it away "
                        "(or choose another --grid-dir)") from None
    # a left-out --seed is no difference: the run's own continues (flag_differences)
    differences = ["it is a test run"] if "nshots" in stored else flag_differences(stored, args)
    if differences:
        raise GridError(f"cell run folder {run_dir} holds another run ({'; '.join(differences)}); move it away or "
                        "choose another --grid-dir")
    return True


def cell_finished(run_dir: Path, niter: int) -> bool:
    """Whether a cell's training ran all its epochs (``progress.json``) and left its ``best_model.pt``."""
    done = epochs_finished(run_dir)
    return done is not None and done >= niter and (run_dir / BEST_NAME).is_file()


def group_finished(grid: Path, group: TestGroup) -> bool:
    """Whether a group's test sweep wrote all its cells (``results.json``: ``"complete": true``)."""
    try:
        return bool(json.loads((group.run_dir(grid) / "results.json").read_text()).get("complete"))
    except (OSError, ValueError, AttributeError):
        return False


# --- jobs.json ------------------------------------------------------------------------------------------------

@dataclass
class JobRecord:
    """One job submitted for a grid: ``name`` is a cell's, or ``"test"`` for the test sweep."""

    name: str
    job_id: str
    executor: str
    submitted: str = field(default_factory=lambda: datetime.datetime.now().isoformat(timespec="seconds"))
    state: Optional[str] = None  # the final state, where the launcher saw it (local executor)


def read_jobs(grid: Path) -> list[JobRecord]:
    """Every job of the grid, oldest first."""
    try:
        return [JobRecord(**entry) for entry in json.loads((grid / JOBS_NAME).read_text())]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError) as exc:
        raise GridError(f"cannot read {grid / JOBS_NAME} ({exc})") from exc


def write_jobs(grid: Path, records: Sequence[JobRecord]) -> None:
    atomic_write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n", grid / JOBS_NAME)


def latest_jobs(records: Sequence[JobRecord]) -> dict[str, JobRecord]:
    """The newest job of every name."""
    return {record.name: record for record in records}


# --- status ---------------------------------------------------------------------------------------------------

@dataclass
class CellStatus:
    """What ``launch.py status`` shows of a cell or a test sweep."""

    name: str
    job_id: str
    state: str
    epoch: str
    best_miou: str
    last_line: str


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (its last 4 KB are read)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4096))
            lines = [line.strip() for line in handle.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def best_miou_in_log(path: Path) -> Optional[float]:
    """The best validation mIoU a training log records so far (its ``Model saved @E w/ val. mIoU: M.`` lines)."""
    best = None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "w/ val. mIoU:" in line:
            try:
                best = float(line.rsplit("w/ val. mIoU:", 1)[1].strip().rstrip("."))
            except ValueError:
                continue
    return best


def grid_status(grid: Path, states: Callable[[Sequence[JobRecord]], dict[str, str]]) -> list[CellStatus]:
    """A row per cell and per test sweep: newest job id, its state (``states`` maps records to states), finished
    epochs of ``--niter``, best validation mIoU so far and the last line of the log."""
    spec = read_spec(grid)
    if spec is None:
        raise GridError(f"{grid} holds no grid ({GRID_NAME} missing); give the --grid-dir of a launch.py grid")
    latest = latest_jobs(read_jobs(grid))
    known = states(list(latest.values()))

    def job(name: str) -> tuple[str, str]:
        record = latest.get(name)
        return (record.job_id, known.get(record.job_id, "UNKNOWN")) if record else ("-", "not submitted")

    rows = []
    for cell in expand(spec):
        run_dir = cell.run_dir(grid)
        done, best = epochs_finished(run_dir), best_miou_in_log(run_dir / LOG_NAME)
        rows.append(CellStatus(cell.name, *job(cell.name), f"{done or 0}/{_niter(run_dir) or '?'}",
                               f"{best:.2f}" if best is not None else "-", _last_line(run_dir / LOG_NAME)))
    for group in test_groups(spec):
        rows.append(CellStatus(f"test {group.name}", *job("test"), "complete" if group_finished(grid, group) else "-",
                               "-", _last_line(group.run_dir(grid) / LOG_NAME)))
    return rows


def _niter(run_dir: Path) -> Optional[int]:
    try:
        return int(json.loads((run_dir / ARGS_NAME).read_text())["niter"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_status(rows: Sequence[CellStatus], width: int = 60) -> str:
    """The rows as an aligned table (the log line cut to ``width`` characters)."""
    header = CellStatus("cell", "job", "state", "epochs", "best mIoU", "last log line")
    table = [astuple(row) for row in (header, *rows)]  # the log line last
    cols = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = []
    for *cells, line in table:
        text = "  ".join(value.ljust(w) for value, w in zip(cells, cols))
        line = line if len(line) <= width else line[:width - 3] + "..."
        lines.append(f"{text}  {line}".rstrip())
    return "\n".join(lines)


def write_tables(grid: Path, spec: GridSpec) -> Path:
    """``GRID/tables.md``: every finished test sweep's ``table.md`` under its title (the paper's layout, 95%
    intervals), a line for each sweep not finished."""
    parts = ["# The grid's tables\n"]
    for group in test_groups(spec):
        table = group.run_dir(grid) / "table.md"
        if group_finished(grid, group) and table.is_file():
            parts.append(table.read_text().rstrip() + "\n")
        else:
            parts.append(f"## {group.name}: not finished\n")
    return atomic_write_text("\n".join(parts), grid / TABLES_NAME)
