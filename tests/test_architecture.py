"""The shape of the code: imports (and started processes) point one way, and every shared fact has one home.

Layers, bottom to top (docs/code_map.md): ``common`` (imports no other package of ours) -> ``data`` and
``model`` side by side (neither imports the other; ``model`` is IMR-HSNet only) -> ``priors`` (stage 1: label
text -> priors) -> ``engine`` (the run machinery) -> ``apps`` (predictor, demo, pretraining, support swap) ->
the scripts at the repository root. A module starts processes of its own layer or below only: no package runs
a top-level script, except ``apps/demo.py``, whose job is to run the researcher's commands as they are typed.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data", "model", "priors", "engine", "apps")
ALLOWED = {
    "common": {"common"},
    "data": {"common", "data"},
    "model": {"common", "model"},
    "priors": {"common", "data", "priors"},
    "engine": {"common", "data", "model", "priors", "engine"},
    "apps": {"common", "data", "model", "priors", "engine", "apps"},
}
SCRIPT_RUNNERS = {"apps/demo.py"}  # the demo runs train.py, test.py, ... as a researcher types them
# Library and script code (tests and benchmarks hold expected values and settings of their own).
SOURCES = sorted([p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + list(REPO.glob("*.py")))


def _imported_packages(path: Path) -> set[str]:
    """Our top-level packages that ``path`` imports anywhere (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_down(package):
    wrong = {f"{path.relative_to(REPO)} imports {sorted(_imported_packages(path) - ALLOWED[package])}"
             for path in sorted((REPO / package).rglob("*.py")) if _imported_packages(path) - ALLOWED[package]}
    assert not wrong, ("imports against the layers (common <- data | model <- priors <- engine <- apps <- "
                       "scripts):\n" + "\n".join(wrong))


def _started_modules(path: Path) -> tuple[set[str], set[str]]:
    """What ``path`` may start as a process: the top-level scripts it names (``"train.py"``) and the packages
    of the modules it names after ``"-m"``, when it starts processes at all (subprocess, os.system/exec/spawn)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    starts = any(isinstance(node, (ast.Import, ast.ImportFrom)) and "subprocess" in
                 ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
                 for node in ast.walk(tree))
    starts |= any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os"
                  and (node.attr == "system" or node.attr.startswith(("exec", "spawn", "posix_spawn")))
                  for node in ast.walk(tree))
    if not starts:
        return set(), set()
    scripts = {p.name for p in REPO.glob("*.py")}
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    named_scripts = {s for s in strings if Path(s).name in scripts and not s.startswith(("-", " "))}
    modules = set()
    for node in ast.walk(tree):  # [..., "-m", "pkg.mod", ...]
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            modules |= {str(items[i + 1]).split(".")[0] for i, item in enumerate(items[:-1])
                        if item == "-m" and isinstance(items[i + 1], str)}
    return named_scripts, modules


@pytest.mark.parametrize("package", PACKAGES)
def test_started_processes_point_down(package):
    """A process start is an import by other means: no package below the scripts runs one (the demo aside),
    and ``python -m pkg.mod`` only for a package the module may import."""
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        scripts, modules = _started_modules(path)
        name = str(path.relative_to(REPO))
        if scripts and name not in SCRIPT_RUNNERS:
            wrong.append(f"{name} runs {sorted(scripts)}")
        if modules & set(PACKAGES) - ALLOWED[package]:
            wrong.append(f"{name} runs python -m {sorted(modules & set(PACKAGES) - ALLOWED[package])}")
    assert not wrong, "processes started against the layers:\n" + "\n".join(wrong)


def test_the_layers_are_the_packages():
    """Every package folder of the repository has its layer (a new one is placed on purpose)."""
    folders = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert folders <= set(PACKAGES) | {"tests", "benchmarks"}, folders - set(PACKAGES)


def test_model_is_imrhsnet_only():
    """Stage 2 only: no CLIP, no prior recipe, and a size that still reads in one sitting."""
    sources = sorted((REPO / "model").rglob("*.py"))
    clip = [str(p.relative_to(REPO)) for p in sources if re.search(r"\bopen_clip\b|\bclip\b|grad_cam", p.read_text())]
    assert not clip, f"CLIP/prior code in model/: {clip}"
    lines = sum(len(p.read_text().splitlines()) for p in sources)
    assert lines <= 1800, f"model/ has {lines} lines (at most 1800)"


def test_scripts_are_not_imported_by_the_packages():
    scripts = {p.stem for p in REPO.glob("*.py")}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                        for alias in node.names}
            imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                         if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
            assert not imported & scripts, f"{path.relative_to(REPO)} imports a script: {imported & scripts}"


def _count(pattern: str) -> list[str]:
    """``file:line`` of every line of the library/script sources matching ``pattern``."""
    regex = re.compile(pattern)
    return [f"{path.relative_to(REPO)}:{number}" for path in SOURCES
            for number, line in enumerate(path.read_text().splitlines(), 1) if regex.search(line)]


@pytest.mark.parametrize("fact, pattern, expected", [
    ("the number of folds", r"\bNFOLDS\s*=", 1),
    ("the fold choices spelled out", r"choices=\[0, 1, 2, 3\]", 0),
    ("the benchmark names", r"[\[(]\s*\"pascal\",\s*\"coco\"", 0),
    ("a benchmark's spec", r"\bname=\"(pascal|coco|fss)\"", 3),
    ("the class counts", r"\bnclass=(20|80|1000)\b", 3),
    ("a class count as a literal", r"\bnclass\s+=\s*(20|80)\b|\bnclass\s*=\s+(20|80)\b", 0),  # not a spec
    ("the ImageNet mean", r"0\.485,\s*0\.456,\s*0\.406", 1),
    ("the ImageNet std", r"0\.229,\s*0\.224,\s*0\.225", 1),
    ("the backbone names", r"^\s*\"vgg16\":", 1),
    ("the backbone names as a list", r"\"vgg16\",\s*\"resnet50\"", 0),
    ("the ignore label", r"\w*IGNORE\w*\s*=\s*255\b", 1),
    ("the ignore label as a literal", r"[=!]=\s*255\b|\]\s*=\s*255\b", 0),
    ("the bilinear align_corners resize", r"mode=\"bilinear\",\s*align_corners=True", 1),
    ("a private bilinear resize", r"def _resize\b", 0),
    ("the default CAM folders", r"\"CAM_Train\"", 1),
    ("the repository root", r"Path\(__file__\)\.resolve\(\)\.parents\[1\]", 1),
    ("the released image size", r"^IMG_SIZE\s*=", 1),
    ("the image size 400 as a default", r"img_size:\s*int\s*=\s*400\b|default=400\b", 0),
    ("the feature stride", r"^FEATURE_STRIDE\s*=", 1),
    ("the feature stride as a bare // 8", r"size\s*//\s*8\b", 0),
    ("the CAM size", r"^CAM_SIZE\s*=", 1),
    ("the CAM size as a default", r"cam_size:\s*(Optional\[int\]|int)\s*=\s*50\b", 0),
    ("a size of 50 spelled out", r"\w*SIZE\w*\s*=\s*50\b", 0),
])
def test_each_fact_has_one_home(fact, pattern, expected):
    places = _count(pattern)
    assert len(places) == expected, f"{fact}: expected {expected} definition(s), found {places}"
