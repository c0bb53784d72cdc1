"""Golden comparisons that say how far from their tolerance they were.

Every golden or parity test compares through :func:`check_deviation` (or :func:`check_close`), which asserts
``deviation <= tolerance`` and, when ``$IMR_GOLDEN_SPREAD_LOG`` names a file, appends one JSON line per check:
``{"test", "check", "deviation", "tolerance", "config"}``. ``python -m tests.portability`` runs the golden
tests under other CPU kernels, thread counts and oneDNN settings with that variable set, and reports each
check's worst deviation beside its tolerance (docs/testing.md keeps the table): a tolerance must stay at least
10x above the worst deviation seen anywhere. With ``$IMR_GOLDEN_MEASURE=1`` the checks only record (to
measure the spreads a new tolerance is set from: ``python -m tests.portability --measure``).
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

SPREAD_LOG_ENV = "IMR_GOLDEN_SPREAD_LOG"
MEASURE_ENV = "IMR_GOLDEN_MEASURE"  # "1": record every deviation, assert none (to measure spreads for new tolerances)


def cpu_config() -> str:
    """The CPU numerics this process runs with: kernel set, threads, oneDNN."""
    return (f"{torch.backends.cpu.get_cpu_capability()}/{torch.get_num_threads()}t/"
            f"onednn-{'on' if torch.backends.mkldnn.enabled else 'off'}")


def record(check: str, deviation: float, tolerance: float) -> None:
    """Append one check's deviation to ``$IMR_GOLDEN_SPREAD_LOG`` (nothing when it is unset)."""
    path = os.environ.get(SPREAD_LOG_ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
    line = json.dumps({"test": test, "check": check, "deviation": float(deviation), "tolerance": float(tolerance),
                       "config": cpu_config()})
    with open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def check_deviation(check: str, deviation: float, tolerance: float, detail: str = "") -> None:
    """Record ``deviation`` and assert it is within ``tolerance``."""
    record(check, deviation, tolerance)
    if os.environ.get(MEASURE_ENV) == "1":
        return
    assert deviation <= tolerance, f"{check}: deviation {deviation:.3e} > tolerance {tolerance:.1e} {detail}".rstrip()


def check_close(check: str, actual: torch.Tensor, expected: torch.Tensor, atol: float,
                scale: Optional[float] = None) -> None:
    """Max absolute difference (divided by ``scale`` when given) within ``atol``; shapes must match."""
    assert actual.shape == expected.shape, f"{check}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    deviation = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    check_deviation(check, deviation / scale if scale else deviation, atol)
