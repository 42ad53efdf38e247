"""Check that two workflow working directories made the same results at one scale: the same files under
results/<scale>/, the same tidy rows, result tables and claim verdicts, and the same provenance, apart from
what measures the machine (steps_per_second rows, wall_time_s, cpu_time_s, started, peak_memory_mb). CI uses it
to show that the SLURM executor makes what the local executor makes.

    python experiments/slurm/compare_results.py LOCAL_DIR SLURM_DIR [--scale smoke]

Exits 0 and prints what it compared, or exits 1 naming every file that differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from analysis.tidy import MACHINE_FIELDS

# Tidy rows that measure the machine, not the run (experiments/runner.py logs them every log_period).
TIMING_METRICS = ("steps_per_second",)
# Provenance columns that measure the machine (time taken, resident memory) or the moment a run started.
MACHINE_COLUMNS = (*MACHINE_FIELDS, "started")


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["metric"].isin(TIMING_METRICS)] if "metric" in frame else frame


def _provenance(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in MACHINE_COLUMNS if c in frame])


def _compare(name: str, a: pd.DataFrame, b: pd.DataFrame) -> str | None:
    """None when the two tables hold the same rows (in any order), else what differs."""
    if sorted(a.columns) != sorted(b.columns):
        return f"{name}: columns differ: {sorted(set(a.columns) ^ set(b.columns))}"
    if len(a) != len(b):
        return f"{name}: {len(a)} rows vs {len(b)}"
    columns = sorted(a.columns)
    a = a[columns].sort_values(columns, ignore_index=True)
    b = b[columns].sort_values(columns, ignore_index=True)
    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
    except AssertionError as error:
        return f"{name}: {str(error).splitlines()[0]}"
    return None


def compare(first: Path, second: Path, scale: str) -> tuple[list[str], int]:
    """Differences between the results of two working directories, and the number of rows compared."""
    roots = [d / "results" / scale for d in (first, second)]
    files = [sorted(str(p.relative_to(r)) for p in r.rglob("*") if p.is_file()) for r in roots]
    if not files[0]:
        return [f"{roots[0]}: no results"], 0
    problems = []
    if files[0] != files[1]:
        problems.append(f"files under results/{scale} differ: {sorted(set(files[0]) ^ set(files[1]))}")
    rows = 0
    for name in sorted(set(files[0]) & set(files[1])):
        if not name.endswith(".csv"):
            continue
        clean = _provenance if name.startswith("provenance") else _tidy
        a, b = (clean(pd.read_csv(r / name)) for r in roots)
        rows += len(a)
        problem = _compare(name, a, b)
        if problem:
            problems.append(problem)
    return problems, rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--scale", default="smoke", choices=("smoke", "quick", "paper"))
    args = parser.parse_args(argv)
    problems, rows = compare(args.first, args.second, args.scale)
    if problems:
        print(f"{args.first} and {args.second} differ:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"same results/{args.scale} in {args.first} and {args.second}: {rows} rows of tidy tables, result "
          f"tables and provenance (timing and memory left out: {', '.join(TIMING_METRICS + MACHINE_COLUMNS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
