"""Snakemake script of rule collect: one suite's run folders -> its tidy table and the provenance of its runs.

The tidy table is the run contract's rows (analysis.tidy.load_run) plus, per run, the columns its suite asks
for: each setting the run sweeps, with the run's value read from its run.json (so a sensitivity figure's x
axis traces to the configuration that produced it), each constant tag, and the suite's row_columns that the
run folder's metrics carry (num_actions for the synthetic suite). Runs that do not sweep a setting leave its
column empty, so a figure or claim keyed on a sweep sees only that sweep's runs.

The provenance table has one row per run folder: run_id, config hash, git commit (and whether the checkout
had uncommitted changes), gamma and reward clipping (the |Q| bound of divergence), package versions, device,
status, wall time. Each run's run.json is also copied
under results/<scale>/run_json/<suite>/<label>/<env>/, since run folders are not committed.
"""


import json
import shutil
import sys
import traceback
from pathlib import Path

import pandas as pd

from analysis import tidy

VERSION_PACKAGES = ("qrepro", "torch", "numpy", "gymnasium", "ale-py", "mujoco", "pandas", "rliable", "python")


def _raw_metrics(run_dir: Path) -> pd.DataFrame:
    # The same file analysis.tidy.load_run reads, in the same row order.
    parquet, csv = run_dir / "metrics.parquet", run_dir / "metrics.csv"
    return pd.read_parquet(parquet) if parquet.exists() else pd.read_csv(csv)


def _cell(value):
    # A list-valued setting (e.g. hidden layer widths) is kept as its text: a table cell holds one value.
    return ",".join(map(str, value)) if isinstance(value, list) else value


def run_table(run: dict, row_columns: list[str], suite: str) -> pd.DataFrame:
    """One run folder's tidy rows with its sweep, tag and row columns, as rows of ``suite``: a run another
    suite trains and this one reuses (a scale's reuse key) records that suite in its own rows."""
    run_dir = Path(run["dir"])
    info = tidy.read_run_json(run_dir)
    df = tidy.load_run(run_dir)
    df["suite"] = suite
    if row_columns:
        raw = _raw_metrics(run_dir)
        missing = [c for c in row_columns if c not in raw.columns]
        if missing:
            raise ValueError(f"{run_dir}: metrics lack the suite's row_columns {missing}")
        df[row_columns] = raw.loc[df.index, row_columns]
    algo_config = info["config"].get("algo_config") or {}
    for key in run["sweeps"]:
        if key not in algo_config:
            raise ValueError(f"{run_dir}/run.json: config.algo_config has no {key!r}, which the suite sweeps; "
                             f"valid: {', '.join(sorted(algo_config))}")
        df[key] = _cell(algo_config[key])
    for key, value in run["tags"].items():
        df[key] = value
    return df


def provenance_row(run_dir: Path) -> dict:
    info = tidy.read_run_json(run_dir)
    config = info.get("config", {})
    algo_config = config.get("algo_config") or {}
    versions = info.get("versions", {})
    return {
        "run_dir": str(run_dir),
        "algo": config.get("algo"),
        "env": config.get("env"),
        "seeds": " ".join(map(str, config.get("seeds", []))),
        "steps": config.get("steps"),
        "steps_done": info.get("steps_done"),
        "protocol": info.get("protocol"),
        "frames_per_step": info.get("frames_per_step"),
        "git_dirty": info.get("git", {}).get("dirty"),
        # The bound on |Q| that divergence is judged by (analysis.tidy.q_bound) needs both.
        "gamma": algo_config.get("gamma"),
        "clip_rewards": algo_config.get("clip_rewards", False),
        "started": info.get("started"),
        **{f"version_{name}": versions.get(name) for name in VERSION_PACKAGES},
    }


def copy_run_json(dirs: list[Path], out: Path) -> None:
    """Each run folder's run.json, byte for byte, under out/<label>/<env>/ (runs/<scale>/<suite>/<label>/<env>;
    a reused run's copy sits with the suite that reads it too): run folders are not committed, so these copies
    are what keeps every committed number traceable to its run's config, commit and versions."""
    for d in dirs:
        source = Path(d) / "run.json"
        tidy.atomic_write(out.joinpath(*Path(d).parts[-2:], "run.json"),
                          lambda tmp, source=source: shutil.copyfile(source, tmp))


def main(snakemake) -> None:
    runs, row_columns = snakemake.params.runs, list(snakemake.params.row_columns)
    frames = [run_table(run, row_columns, snakemake.wildcards.suite) for run in runs]
    tidy_table = pd.concat(frames, ignore_index=True) if frames else tidy.load_runs([])
    csv = Path(snakemake.output.csv)
    tidy.write_table(tidy_table, csv.with_suffix(""))
    dirs = [Path(run["dir"]) for run in runs]
    info = tidy.run_info(dirs)
    extra = pd.DataFrame([provenance_row(d) for d in dirs])
    provenance = info.merge(extra, on="run_dir", how="left") if len(info) else info
    tidy.atomic_write(snakemake.output.provenance, lambda tmp: provenance.to_csv(tmp, index=False))
    copy_run_json(dirs, Path(snakemake.output.run_json))
    print(f"collect: {len(runs)} runs, {len(tidy_table)} rows -> {csv.with_suffix('')}.{{csv,parquet}}")
    print(json.dumps({"columns": list(tidy_table.columns)}))


if __name__ == "__main__":
    with open(snakemake.log.messages, "w") as log:  # noqa: F821 - injected by Snakemake
        sys.stdout = sys.stderr = log
        try:
            main(snakemake)  # noqa: F821
        except Exception:
            traceback.print_exc()  # into the job's log; Snakemake shows it too once re-raised
            raise
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
