"""The golden and parity tests under other CPU numerics: kernel sets, thread counts, oneDNN on and off.

    python -m tests.portability                      # the standard configurations (about 9 golden runs)
    python -m tests.portability --grid full          # every capability x threads x oneDNN combination
    python -m tests.portability --configs default/1/on avx2/4/off --select "golden and not slow"
    python -m tests.portability --measure            # record every deviation, fail none (new tolerances)
    python -m tests.portability tests/test_model_step.py   # one file's golden tests

Each configuration runs ``pytest -m golden`` (or ``--select``) in a fresh process with ATEN_CPU_CAPABILITY,
OMP_NUM_THREADS and ``$IMR_TEST_ONEDNN`` set, and every golden check logs its deviation
(tests/golden_spread.py). The report gives, per check, its tolerance, the worst deviation over all
configurations, where it was seen, and the margin (tolerance / worst). It exits 1 when a run failed or a
margin is under 10: a tolerance closer than that to what was measured would fail on the next CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
MIN_MARGIN = 10.0
THREADS = (1, 2, 4)


@dataclass(frozen=True)
class CpuConfig:
    """One CPU numerics setting: ATEN_CPU_CAPABILITY, the thread count, oneDNN on or off."""

    capability: str
    threads: int
    onednn: bool

    @property
    def name(self) -> str:
        return f"{self.capability}/{self.threads}/{'on' if self.onednn else 'off'}"

    @classmethod
    def parse(cls, text: str) -> "CpuConfig":
        """``CAPABILITY/THREADS/on|off``, e.g. ``avx2/4/off``."""
        try:
            capability, threads, onednn = text.split("/")
            if onednn not in ("on", "off"):
                raise ValueError
            return cls(capability, int(threads), onednn == "on")
        except ValueError:
            raise argparse.ArgumentTypeError(f"--configs: {text!r} is not CAPABILITY/THREADS/on|off") from None

    def env(self) -> dict[str, str]:
        """The environment of a pytest run under this setting."""
        env = dict(os.environ, ATEN_CPU_CAPABILITY=self.capability, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        env["IMR_TEST_ONEDNN"] = "1" if self.onednn else "0"
        env["IMR_TEST_THREADS"] = str(self.threads)  # PyTorch caps OMP_NUM_THREADS at the core count
        return env


def capabilities() -> list[str]:
    """``default``, ``avx2`` where the CPU has it, and the CPU's best kernel set when it is another one."""
    best = torch.backends.cpu.get_cpu_capability().lower()
    found = ["default"]
    if best != "default":
        found.append("avx2")
        if best not in found:
            found.append(best)
    return found


def standard_configs() -> list[CpuConfig]:
    """Each kernel set at 1 and 4 threads with oneDNN on, and at 2 threads with oneDNN off."""
    return [CpuConfig(cap, threads, True) for cap in capabilities() for threads in (1, 4)] + \
           [CpuConfig(cap, 2, False) for cap in capabilities()]


def full_grid() -> list[CpuConfig]:
    """Every kernel set x 1, 2, 4 threads x oneDNN on and off."""
    return [CpuConfig(cap, threads, onednn) for cap in capabilities() for threads in THREADS
            for onednn in (True, False)]


def run_config(config: CpuConfig, select: str, log: Path, measure: bool = False,
               paths: tuple[str, ...] = ()) -> int:
    """Run the selected tests (of ``paths``, default all) under ``config``, their checks appended to ``log``;
    pytest's exit status. ``measure``: the golden checks record without asserting."""
    env = config.env()
    env["IMR_GOLDEN_SPREAD_LOG"] = str(log)
    env["IMR_GOLDEN_MEASURE"] = "1" if measure else "0"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", select, "--durations=0", *paths]
    print(f"== {config.name}: {' '.join(command[1:])}", flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    tail = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
    print("   " + (tail[0] if tail else f"pytest exited {result.returncode}"), flush=True)
    if result.returncode != 0:
        print(result.stdout[-4000:], result.stderr[-2000:], sep="\n", flush=True)
    return result.returncode


def summarise(records: list[dict]) -> list[dict]:
    """Per (test, check): its tolerance, the worst deviation, the configuration it came from, the margin."""
    worst: dict[tuple[str, str], dict] = {}
    for rec in records:
        key = (rec["test"], rec["check"])
        if key not in worst or rec["deviation"] > worst[key]["deviation"]:
            worst[key] = rec
    rows = []
    for (test, check), rec in sorted(worst.items()):
        margin = rec["tolerance"] / rec["deviation"] if rec["deviation"] > 0 else float("inf")
        rows.append({"test": test, "check": check, "tolerance": rec["tolerance"], "worst": rec["deviation"],
                     "config": rec["config"], "margin": margin})
    return rows


def markdown(rows: list[dict], configs: list[CpuConfig]) -> str:
    """The report as the table docs/testing.md keeps."""
    lines = [f"Configurations: {', '.join(c.name for c in configs)} (kernel set/threads/oneDNN).", "",
             "| test | check | tolerance | worst deviation | seen under | margin |", "|---|---|---|---|---|---|"]
    for row in rows:
        margin = "exact" if row["margin"] == float("inf") else f"{row['margin']:.0f}x"
        lines.append(f"| {row['test'].split('::', 1)[-1]} | {row['check']} | {row['tolerance']:.1e} | "
                     f"{row['worst']:.2e} | {row['config']} | {margin} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the configurations, print the report; 1 when a run failed or a margin is under MIN_MARGIN."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", choices=["standard", "full"], default="standard",
                        help="standard: each kernel set at 1 and 4 threads, and with oneDNN off; full: all combinations")
    parser.add_argument("--configs", nargs="+", type=CpuConfig.parse, default=None,
                        help="explicit configurations CAPABILITY/THREADS/on|off (overrides --grid)")
    parser.add_argument("--select", default="golden", help="pytest -m expression of the tests to run")
    parser.add_argument("--measure", action="store_true",
                        help="golden checks record their deviations without failing (to set new tolerances)")
    parser.add_argument("paths", nargs="*", help="test files to run (default: all of tests/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the per-check rows as JSON here")
    args = parser.parse_args(argv)
    configs = args.configs or (full_grid() if args.grid == "full" else standard_configs())
    failed = []
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "spread.jsonl"
        for config in configs:
            if run_config(config, args.select, log, args.measure, tuple(args.paths)) != 0:
                failed.append(config.name)
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    rows = summarise(records)
    print(markdown(rows, configs))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    close = [f"{row['check']} ({row['margin']:.1f}x)" for row in rows if row["margin"] < MIN_MARGIN]
    if failed:
        print(f"FAILED under: {', '.join(failed)}")
    if close:
        print(f"tolerances closer than {MIN_MARGIN:.0f}x to a measured deviation: {'; '.join(close)}")
    return 1 if failed or close else 0


if __name__ == "__main__":
    sys.exit(main())
