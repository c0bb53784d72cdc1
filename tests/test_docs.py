"""docs/code_map.md names only files that exist: every module in its table, under the layer's folder."""
from __future__ import annotations

import re

from common.paths import REPO_ROOT


def _brace_expand(name: str) -> list[str]:
    """``generate_cam_{voc,coco}.py`` -> both names."""
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return [name]
    return [alt for part in match.group(1).split(",")
            for alt in _brace_expand(name[:match.start()] + part + name[match.end():])]


def code_map_paths() -> list[str]:
    """Every file or folder named in the table of docs/code_map.md, relative to the repository."""
    paths, layer = [], ""
    for line in (REPO_ROOT / "docs" / "code_map.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3 or set(cells[0]) <= set("-") and cells[0]:
            continue
        if cells[0].startswith("`") and cells[0].endswith("/`"):
            layer = cells[0].strip("`")
        elif cells[0] == "scripts":
            layer = ""
        elif cells[0]:
            continue  # the header row
        for name in re.findall(r"`([^`]+)`", cells[1]):
            paths += [layer + expanded for expanded in _brace_expand(name)]
    return paths


def test_code_map_names_existing_files():
    paths = code_map_paths()
    assert len(paths) > 40
    missing = [path for path in paths if not (REPO_ROOT / path).exists()]
    assert not missing, f"docs/code_map.md names files that do not exist: {missing}"


def test_code_map_names_every_module():
    """The converse: every module of the packages is in the table (the map matches the tree)."""
    named = set(code_map_paths())
    modules = [str(path.relative_to(REPO_ROOT)) for package in ("apps", "engine", "priors", "model", "data", "common")
               for path in sorted((REPO_ROOT / package).rglob("*.py"))
               if path.name != "__init__.py" or path.parent.name == "recipes"]
    missing = [module for module in modules if module not in named]
    assert not missing, f"docs/code_map.md does not name: {missing}"
