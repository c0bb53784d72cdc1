"""Where the repository is, and the default folders derived from it (never the working directory)."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATAPATH = REPO_ROOT.parent / "Datasets_HSN"  # the released "../Datasets_HSN", next to the repository
LOG_ROOT = REPO_ROOT / "logs"  # relative --logpath names go here, as released
CACHE_ROOT = REPO_ROOT / ".cache"  # fetched split lists (git-ignored)
