"""Shared fixtures: a session-wide synthetic benchmark, and CUDA-test skipping."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``cuda`` when PyTorch sees no GPU."""
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic benchmark (PASCAL and COCO layouts) made once per test session, seed 0."""
    from data.synthetic import make_benchmark

    root = tmp_path_factory.mktemp("synthetic")
    make_benchmark(root, seed=0)
    return root
