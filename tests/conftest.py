"""Shared fixtures and settings: a session-wide synthetic benchmark, per-module scratch folders, CUDA-test
skipping, and the CPU numerics asked for by ``$IMR_TEST_ONEDNN`` and ``$IMR_TEST_THREADS``.

Under pytest-xdist (``make test`` runs ``PYTEST_WORKERS`` processes) each worker gets an equal share of the cores
as its PyTorch threads, and its subprocesses the same through ``OMP_NUM_THREADS``: two workers of two threads each
on a 2-core CPU would spin against each other. The golden values hold at any thread count (docs/testing.md).

Training runs write checkpoints of about 0.6 GB each (the released format keeps VGG16's classifier), so
scratch folders are removed as soon as their tests passed: function ones by ``tmp_path_retention_policy``
in ``pytest.ini``, module ones by :func:`module_tmp`. A failed test keeps its folders for a post-mortem.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
ONEDNN_ENV = "IMR_TEST_ONEDNN"  # "0": the whole test session runs with oneDNN off (python -m tests.portability)
THREADS_ENV = "IMR_TEST_THREADS"  # N: torch.set_num_threads(N), also above the core count (OMP_NUM_THREADS is capped)
WORKERS_ENV = "PYTEST_XDIST_WORKER_COUNT"  # set by pytest-xdist in each worker


def pytest_configure(config):
    """Apply the CPU numerics that ``$IMR_TEST_ONEDNN`` and ``$IMR_TEST_THREADS`` ask for (the kernel set has
    PyTorch's own variable, ATEN_CPU_CAPABILITY)."""
    if os.environ.get(ONEDNN_ENV) == "0":
        torch.backends.mkldnn.enabled = False
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    elif os.environ.get(WORKERS_ENV):
        threads = max(1, (os.cpu_count() or 1) // int(os.environ[WORKERS_ENV]))
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


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


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """``module_tmp(name)`` makes a fresh folder for one test module's shared fixtures.

    The folders are removed when the module's last test is done, unless a test failed meanwhile.
    """
    made: list[Path] = []
    failed_before = request.session.testsfailed

    def make(name: str) -> Path:
        path = tmp_path_factory.mktemp(name)
        made.append(path)
        return path

    yield make
    if request.session.testsfailed == failed_before:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
