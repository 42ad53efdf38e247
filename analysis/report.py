"""results/<scale>/report.md: claim by claim, the verdict with its numbers, runs, figure and compute spent.

``render_report`` is a pure function of the verdict table (claims.evaluate_all) and the run table
(tidy.run_info); ``write_report`` writes its text atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import claims, tidy
from analysis.tables import format_interval, format_number

SMOKE_BANNER = (
    "> **Smoke scale: plumbing only, never a replication.** Smoke budgets are far too small to test any\n"
    "> claim. These outputs show that the workflow runs end to end; the verdicts below say nothing about\n"
    "> the papers."
)
QUICK_NOTE = (
    "> Quick scale: reduced budgets (DESIGN.md, Scales). A verdict here tests the claim at this budget,\n"
    "> not at the published one."
)
FIGURE_EXT = "png"


def _estimate(row) -> str:
    if pd.isna(row["estimate"]):
        return ""
    return format_interval(row["estimate"], row["ci_low"], row["ci_high"])


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def compute_spent(info: pd.DataFrame) -> pd.DataFrame:
    """Per suite: runs, runs by status, wall time (sum of run.json wall_time_s) and runs whose run.json
    records none (counted as 0 s, so the total is a lower bound when there are any), plus a total row."""
    columns = ["runs", "complete", "diverged", "failed", "no_wall_time", "wall_time_s"]
    rows = []
    for suite, runs in info.assign(suite=info["suite"].fillna("unknown")).groupby("suite", sort=True):
        status = runs["status"].value_counts()
        rows.append({"suite": suite, "runs": len(runs), **{s: int(status.get(s, 0)) for s in columns[1:4]},
                     "no_wall_time": int(runs["wall_time_s"].isna().sum()),
                     "wall_time_s": float(runs["wall_time_s"].sum())})
    table = pd.DataFrame(rows, columns=["suite", *columns])
    total = {"suite": "total", **{c: table[c].sum() for c in columns}}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)


def _figure_link(row) -> str:
    """The figure's Markdown link, for claims that had runs (a claim without runs has no figure to show)."""
    if not row["figure"] or row["n_runs"] == 0:
        return ""
    return f"[{Path(row['figure']).name}]({row['figure']}.{FIGURE_EXT})"


def _markdown_rows(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def _without_runs(verdicts: pd.DataFrame) -> str:
    """ " (K of them for want of runs; suites: a, b)": claims with no runs to judge (suite not run at this scale,
    or its runs all failed), so a reader does not take them for weak evidence."""
    none = verdicts[(verdicts["verdict"] == claims.INCONCLUSIVE) & (verdicts["n_runs"] == 0)]
    if none.empty:
        return ""
    return f" ({len(none)} of them for want of runs; suites: {', '.join(sorted(none['suite'].unique()))})"


def render_report(verdicts: pd.DataFrame, info: pd.DataFrame, scale: str) -> str:
    """The Markdown report for one scale.

    ``verdicts``: claims.evaluate_all's table. ``info``: tidy.run_info over every run folder of the scale,
    failed ones included (their compute was spent too). Figures are linked relative to results/<scale>/ and
    only for claims that had runs.
    """
    if scale not in claims.SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(claims.SCALES)}")
    lines = [f"# qrepro report: {scale} scale", ""]
    if scale == "smoke":
        lines += [SMOKE_BANNER, ""]
    elif scale == "quick":
        lines += [QUICK_NOTE, ""]
    counts = verdicts["verdict"].value_counts()
    spent = compute_spent(info)
    total = spent.iloc[-1]
    commits = sorted(c for c in info["git_commit"].dropna().unique())
    unrecorded = int(total["no_wall_time"])
    lines += [
        f"{len(verdicts)} claims: {counts.get(claims.REPRODUCED, 0)} reproduced, "
        f"{counts.get(claims.NOT_REPRODUCED, 0)} not reproduced, "
        f"{counts.get(claims.INCONCLUSIVE, 0)} inconclusive" + _without_runs(verdicts) + ".",
        f"{int(total['runs'])} runs ({int(total['complete'])} complete, {int(total['diverged'])} diverged, "
        f"{int(total['failed'])} failed); compute spent {_hours(total['wall_time_s'])} of wall time "
        "(sum over run.json)"
        + (f"; a lower bound: {unrecorded} of the runs recorded no wall time." if unrecorded else "."),
        f"Code: {', '.join(commits) if commits else 'unknown commit'}.",
        "",
        "Verdicts: reproduced when the estimate passes the threshold and its 95% stratified-bootstrap CI "
        "excludes the null; not reproduced when the CI lies wholly on the wrong side of the null or wholly "
        "short of the threshold; inconclusive otherwise or without enough runs (analysis/claims.py).",
        "",
        "## Claims",
        "",
    ]
    lines += _markdown_rows(
        ["claim", "source", "verdict", "estimate [95% CI]", "threshold", "runs", "figure"],
        [[r["claim_id"], r["source"], r["verdict"], _estimate(r), format_number(r["threshold"]),
          str(r["n_runs"]), _figure_link(r)] for _, r in verdicts.iterrows()])
    for _, r in verdicts.iterrows():
        comparison = r["comparison"] + (f" ({r['a']} vs {r['b']})" if r["b"] else f" ({r['a']})")
        lines += [
            "", f"### {r['claim_id']}: {r['verdict']}", "",
            f"- statement: {r['statement']}",
            f"- source: {r['source']}",
            f"- test: {comparison}, threshold {format_number(r['threshold'])} at {scale} scale",
            f"- estimate [95% CI]: {_estimate(r) or 'none'}",
            f"- runs: {r['n_runs']}" + (f" ({r['runs']})" if r["runs"] else ""),
            f"- why: {r['reason']}",
        ]
        if _figure_link(r):
            lines += ["", f"![{r['claim_id']}]({r['figure']}.{FIGURE_EXT})"]
    lines += ["", "## Compute spent", ""]
    lines += _markdown_rows(
        ["suite", "runs", "complete", "diverged", "failed", "no wall time", "wall time"],
        [[s["suite"], *(str(int(s[c])) for c in ("runs", "complete", "diverged", "failed", "no_wall_time")),
          _hours(s["wall_time_s"])] for _, s in spent.iterrows()])
    return "\n".join(lines) + "\n"


def write_report(text: str, path: str | Path) -> Path:
    """Write the report atomically (a reader never sees half a report)."""
    return tidy.atomic_write(path, lambda tmp: tmp.write_text(text))
