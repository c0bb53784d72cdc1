"""Compare two test runs on the same episodes: B - A per fold and shot, with a paired bootstrap 95% interval.

    python compare.py logs/baseline.log logs/new.log
    python compare.py A/results.json B/results.json --out comparisons/new_vs_baseline

A and B are ``test.py`` run folders (or their ``results.json``) of the same protocol: benchmark, folds, shots,
seeds and episode lists (checked; anything else is a one-line error saying what differs). For every fold and
shot, and for the mean over the folds, it prints A, B, B - A with its paired bootstrap 95% interval (both runs
resampled with the same episodes) and the share of resamples in which B > A, and writes ``compare.md`` and
``compare.json`` into ``--out``. How the resampling works: :mod:`engine.bootstrap`, :mod:`engine.compare`.

Runs of different ``test.py --protocol`` presets are refused unless ``--across-protocols`` is given: then only
the means over each run's own seeds are compared (no paired interval: the episodes differ), and the output
says so.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from common.cli import ArgumentParser, run_cli
from common.flags import add_flags, check_minimums
from common.io import prepare_output_folder
from common.paths import LOG_ROOT
from engine.bootstrap import DEFAULT_RESAMPLES


def build_parser() -> ArgumentParser:
    """compare.py's flags."""
    parser = ArgumentParser(description="B - A on the same test episodes, with paired bootstrap 95% intervals")
    parser.add_argument("a", help="the reference run: a test.py run folder or its results.json")
    parser.add_argument("b", help="the run compared with it")
    add_flags(parser, "compare", "--bootstrap", "--out", resamples=DEFAULT_RESAMPLES)
    parser.add_argument("--across-protocols", action="store_true",
                        help="compare runs of different test.py --protocol presets: only the means over each run's "
                             "seeds, without a paired interval (their episodes differ)")
    return parser


def _name(path: str) -> str:
    """A run's short name: its folder without ``.log``."""
    folder = Path(path).expanduser().resolve()
    folder = folder.parent if folder.suffix == ".json" else folder
    return folder.name.removesuffix(".log")


def main(argv: Optional[Sequence[str]] = None) -> list:
    """Compare, print the table, write the files; returns the rows."""
    from engine.compare import (across_protocols, check_protocol, compare_markdown, compare_means, compare_runs,
                                load_test_run, write_comparison)

    parser = build_parser()
    args = parser.parse_args(argv)
    check_minimums(parser, args, "compare")
    a, b = load_test_run(args.a, "A"), load_test_run(args.b, "B")
    across = args.across_protocols and across_protocols(a, b)
    check_protocol(a, b, across_protocols=across)  # before the output folder is made: a refused pair leaves nothing
    out = Path(args.out).expanduser().resolve() if args.out else LOG_ROOT / f"compare_{_name(args.a)}_vs_{_name(args.b)}"
    prepare_output_folder(out, "--out")  # a bad --out stops before the work, like every entry point
    rows = compare_means(a, b) if across else compare_runs(a, b, args.bootstrap)
    print(compare_markdown(a, b, rows, args.bootstrap))
    paths = write_comparison(out, a, b, rows, args.bootstrap)
    print(f"Wrote {', '.join(path.name for path in paths.values())} in {out}")
    return rows


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """Run :func:`main`; exit status 2 on bad input."""
    return run_cli(lambda: main(argv), "compare.py")


if __name__ == "__main__":
    sys.exit(cli())
