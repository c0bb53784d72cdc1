"""The fast golden tests under the scalar CPU kernels, one thread and oneDNN off, in a fresh process: a short
CI subset of ``python -m tests.portability`` (which runs every golden test under the standard settings)."""
from __future__ import annotations

import json

import pytest

from tests import portability


@pytest.mark.slow
def test_fast_golden_tests_pass_under_the_scalar_kernels_without_onednn(tmp_path):
    config = portability.CpuConfig("default", 1, False)
    log = tmp_path / "spread.jsonl"
    assert portability.run_config(config, "golden and not slow", log) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all(rec["config"] == "DEFAULT/1t/onednn-off" for rec in records)
    rows = portability.summarise(records)
    assert all(row["worst"] <= row["tolerance"] for row in rows)


def test_config_parsing_and_the_standard_set():
    assert portability.CpuConfig.parse("avx2/4/off") == portability.CpuConfig("avx2", 4, False)
    with pytest.raises(Exception, match="CAPABILITY/THREADS"):
        portability.CpuConfig.parse("avx2-4")
    names = [c.name for c in portability.standard_configs()]
    assert "default/1/on" in names and "default/2/off" in names and len(names) == 3 * len(portability.capabilities())
