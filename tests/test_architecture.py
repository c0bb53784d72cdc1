"""The shape of the code: imports point one way, and every shared fact has one home.

Layers, bottom to top: ``common`` (imports no other package of ours) -> ``data`` and ``model`` side by side
(neither imports the other) -> ``engine`` (the run machinery) -> the scripts at the repository root.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "data", "model", "engine")
ALLOWED = {
    "common": {"common"},
    "data": {"common", "data"},
    "model": {"common", "model"},
    "engine": {"common", "data", "model", "engine"},
}
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
    assert not wrong, "imports against the layers (common <- data, model <- engine <- scripts):\n" + "\n".join(wrong)


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
    ("the benchmark names", r"[\[(]\s*\"pascal\",\s*\"coco\"", 1),
    ("the class counts", r"\"pascal\":\s*20\b", 1),
    ("a class count as a literal", r"\bnclass\s*=\s*(20|80)\b", 0),
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
])
def test_each_fact_has_one_home(fact, pattern, expected):
    places = _count(pattern)
    assert len(places) == expected, f"{fact}: expected {expected} definition(s), found {places}"
