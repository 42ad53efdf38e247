"""Snakemake script of rule table: a suite's tidy table -> one declared result table, as CSV (full precision),
Markdown and LaTeX (analysis.tables renders both).

Each ``table`` name of experiments/schemas/suite.schema.json maps to a function of analysis.tables or to the
glue below, which builds on analysis.tables and analysis.stats:
- ``improvement_table``: probability of improvement between pairs of algorithms on human-normalized scores;
- ``by_value_table``: ``result_table`` once per value of each swept column (a sensitivity sweep, the number
  of actions), so runs of different sweep points are never averaged together.
"""


import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import reference, stats, tables, tidy


def _reps(reps: int | None) -> dict:
    return {} if reps is None else {"reps": reps}


def improvement_table(df: pd.DataFrame, reps: int | None, *, pairs: Sequence[Sequence[str]],
                      normalization: str = reference.DQN_ZOO, metric: str = "eval_return") -> pd.DataFrame:
    """P(x > y) over games with its 95% CI for each (x, y) pair (Agarwal et al. 2021). Per game it compares raw
    scores' order, which normalization keeps; ``normalization`` only checks that the games are the ones named."""
    scores = tidy.final_scores(df, metric, last_fraction=tidy.FINAL_FRACTION)
    matrices = tidy.score_matrix(tidy.normalized(scores, normalization))
    present = [(x, y) for x, y in pairs if x in matrices and y in matrices]
    table = stats.improvement_table(matrices, present, **_reps(reps))
    table = table.rename(columns={"estimate": "p_improvement", "ci_low": "p_improvement_ci_low",
                                  "ci_high": "p_improvement_ci_high"})
    return table.assign(n_tasks=next(iter(matrices.values())).shape[1], normalization=normalization)


def _sorted_values(values) -> list:
    """Numbers in numeric order (2, 16, 128, 1024), anything else in text order."""
    numeric = all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values)
    return sorted(values) if numeric else sorted(values, key=str)


def method_note(reps: int | None) -> str:
    """How every interval of a result table was made (rliable's stratified bootstrap)."""
    replications = f"{reps:,}" if reps else f"{stats.AGGREGATE_REPS:,} (rliable's default)"
    return ("Mean and IQM over runs (seeds) with 95% stratified-bootstrap percentile CIs (rliable), "
            f"{replications} replications; n_runs per row.")


def compute_note(provenance: pd.DataFrame) -> str:
    """The compute behind a table: wall time (and CPU time, where runs record it) summed over the run.json
    files of its runs, with how many each suite trained (a suite may reuse another suite's runs)."""
    if provenance.empty:
        return "Compute: no runs."
    hours = provenance["wall_time_s"].fillna(0).sum() / 3600
    cpu = pd.to_numeric(provenance.get("cpu_time_s", pd.Series(dtype=float)), errors="coerce").dropna()
    cpu_note = f" ({cpu.sum() / 3600:.2f} h of CPU time over the {len(cpu)} that record it)" if len(cpu) else ""
    counts = provenance["suite"].value_counts().sort_index()
    suites = ", ".join(f"{n} of suite {suite}" for suite, n in counts.items())
    return f"Compute: {hours:.2f} h of wall time{cpu_note} over {len(provenance)} run(s): {suites}."


def by_value_table(df: pd.DataFrame, reps: int | None, *, columns: Sequence[str],
                   metrics: Sequence[str] = ("eval_return",),
                   last_fraction: float = tidy.FINAL_FRACTION) -> pd.DataFrame:
    """``tables.result_table`` per metric, swept column and value: columns metric, setting, value first.
    ``last_fraction``: the scoring window, the one the suite's figures and claims use."""
    parts = []
    for metric in metrics:
        for column in columns:
            if column not in df.columns:
                raise ValueError(f"the tidy table has no column {column!r}; the suite sweeps none by that name")
            for value in _sorted_values(df[column].dropna().unique()):
                rows = df[df[column] == value]
                if rows[rows["metric"] == metric].empty:
                    continue
                part = tables.result_table(rows, metric, last_fraction=last_fraction, **_reps(reps))
                # a swept column holds floats wherever some runs leave it empty: print 50, not 50.0
                part.insert(0, "value", int(value) if isinstance(value, float) and value.is_integer() else value)
                part.insert(0, "setting", column)
                part.insert(0, "metric", metric)
                parts.append(part)
    if not parts:
        raise ValueError(f"no rows of metrics {list(metrics)} for the columns {list(columns)}")
    return pd.concat(parts, ignore_index=True)


def _plain(function):
    def build(df, reps, **args):
        return function(df, **args, **_reps(reps))

    return build


TABLES = {
    "result_table": _plain(tables.result_table),
    "aggregate_table": _plain(tables.aggregate_table),
    "naf_vs_ddpg_table": _plain(tables.naf_vs_ddpg_table),
    "improvement_table": improvement_table,
    "by_value_table": by_value_table,
}


def main(snakemake) -> None:
    spec = snakemake.params.spec
    df = pd.read_parquet(snakemake.input.tidy)
    table = TABLES[spec["table"]](df, snakemake.params.reps, **spec.get("args", {}))
    if table.empty:
        raise ValueError(f"table {spec['name']} came out empty: the suite's runs have none of its rows")
    base = Path(snakemake.output.csv).with_suffix("")
    notes = [method_note(snakemake.params.reps), compute_note(pd.read_csv(snakemake.input.provenance))]
    tables.write_table_formats(table, base, caption=" ".join(spec.get("caption", "").split()), notes=notes)
    print(f"table {spec['name']} ({spec['table']}, suite {spec['suite']}): {len(table)} rows -> "
          f"{base}.{{csv,md,tex}}")


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
