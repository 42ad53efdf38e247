"""results/<scale>/report.md: claim by claim, the verdict with its numbers, runs, figure and compute spent.

``render_report`` is a pure function of the verdict table (claims.evaluate_all), the run table (tidy.run_info,
with collect.py's git_dirty where known), the per-member divergence table (tidy.diverged_members) and the
analysis commit; ``write_report`` writes its text atomically.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis import claims, reference, tidy
from analysis.tables import format_interval, format_number

SMOKE_BANNER = (
    "> **Smoke scale: plumbing only, never a replication.** Smoke budgets are far too small to test any\n"
    "> claim. These outputs show that the workflow runs end to end; the verdicts below say nothing about\n"
    "> the papers."
)
QUICK_NOTE = (
    "> Quick scale: reduced budgets (DESIGN.md, Scales). A verdict here tests the claim at this budget,\n"
    "> not at the published one; each claim's section says how its budget compares with the source's."
)
FIGURE_EXT = "png"


def _estimate(row) -> str:
    if pd.isna(row["estimate"]):
        return ""
    return format_interval(row["estimate"], row["ci_low"], row["ci_high"])


def _published(row) -> str:
    if pd.isna(row["published"]):
        return ""
    return f"{format_number(row['published'])} ({row['versus_published']})" if row["versus_published"] else \
        format_number(row["published"])


def _budget(row) -> str:
    """Ours beside the source's training budget per run, and the fraction of it ours is (where it gives one)."""
    ours = row["budget"] or "no runs"
    published = row["published_budget"] or "none stated by the source"
    fraction = row["budget_fraction"]
    share = "" if pd.isna(fraction) else f"; ours is {format_number(100 * fraction)}% of it"
    return f"ours {ours}; published {published}{share}"


def _dirty_runs(info: pd.DataFrame) -> list[str]:
    if "git_dirty" not in info.columns:
        return []
    dirty = info["git_dirty"].astype(str).str.lower() == "true"
    return sorted(info.loc[dirty, "run_dir"].astype(str))


def divergence_summary(members: pd.DataFrame) -> pd.DataFrame:
    """Per suite: members with Q estimates, members judged (a known bound or the runner's flag), diverged."""
    columns = ["suite", "members", "judged", "diverged"]
    if members.empty:
        return pd.DataFrame(columns=columns)
    judged = members["bound"].notna() | members["diverged_flag"]
    table = members.assign(judged=judged).groupby("suite", sort=True).agg(
        members=("seed", "size"), judged=("judged", "sum"), diverged=("diverged", "sum")).reset_index()
    return table[columns]


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def compute_spent(info: pd.DataFrame) -> pd.DataFrame:
    """Per suite: runs, runs by status, wall time (sum of run.json wall_time_s) and runs whose run.json
    records none (counted as 0 s, so the total is a lower bound when there are any), CPU time (sum of
    cpu_time_s, which runs trained before it was recorded lack) and the runs that record it, plus a total row.

    Wall time is what a run took on its machine, shared or not; CPU time is what it cost, whatever else ran."""
    columns = ["runs", "complete", "diverged", "failed", "no_wall_time", "wall_time_s", "with_cpu_time",
               "cpu_time_s"]
    if "cpu_time_s" not in info.columns:
        info = info.assign(cpu_time_s=None)
    rows = []
    for suite, runs in info.assign(suite=info["suite"].fillna("unknown")).groupby("suite", sort=True):
        status = runs["status"].value_counts()
        cpu = pd.to_numeric(runs["cpu_time_s"], errors="coerce")
        rows.append({"suite": suite, "runs": len(runs), **{s: int(status.get(s, 0)) for s in columns[1:4]},
                     "no_wall_time": int(runs["wall_time_s"].isna().sum()),
                     "wall_time_s": float(runs["wall_time_s"].sum()),
                     "with_cpu_time": int(cpu.notna().sum()), "cpu_time_s": float(cpu.sum())})
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


def _test(row) -> str:
    """The claim's comparison and its groups, e.g. "prob_improvement (double_dqn vs dqn)"."""
    return row["comparison"] + (f" ({row['a']} vs {row['b']})" if row["b"] else f" ({row['a']})")


def _counterpart(row, verdicts: pd.DataFrame) -> list[str]:
    """The section lines naming the claim's counterpart (claims.Claim.counterpart) and its verdicts, scope by
    scope, so that a claim not run at this scale points to the evidence on the cheaper testbed."""
    name = row["counterpart"]
    if not name:
        return []
    other = verdicts[verdicts["claim_id"] == name]
    if other.empty:
        return [f"- counterpart: {name} (not in this report)"]
    first = other.iloc[0]
    counts = other["verdict"].value_counts()
    tally = ", ".join(f"{counts[v]} {v}" for v in (claims.REPRODUCED, claims.CONTRADICTED, claims.INCONCLUSIVE,
                                                     claims.NOT_RUN) if v in counts)
    lines = [f"- counterpart: {name}, the same published result on another testbed ({first['suite']} suite; "
             f"test {_test(first)}): {tally} of {len(other)} scopes; its own section gives its budget"]
    lines += [f"  - {o['scope']}: {o['verdict']}" + (f", {_estimate(o)}" if _estimate(o) else "")
              + f" ({o['n_runs']} runs)" for _, o in other.iterrows()]
    return lines


def _not_run(verdicts: pd.DataFrame) -> str:
    """ ", K not run (suites: a, b)": claims with no runs to judge (suite not run at this scale, or its runs all
    failed), counted apart so that a reader does not take them for weak evidence."""
    none = verdicts[verdicts["verdict"] == claims.NOT_RUN]
    if none.empty:
        return ""
    pointed = int(none["counterpart"].astype(bool).sum())
    return (f", {len(none)} not run (suites: {', '.join(sorted(none['suite'].unique()))}"
            + (f"; {pointed} of them name a counterpart claim on a cheaper testbed, whose verdicts their sections "
               "give" if pointed else "") + ")")


def render_report(verdicts: pd.DataFrame, info: pd.DataFrame, scale: str, *,
                  members: pd.DataFrame | None = None, analysis_commit: str = "unknown") -> str:
    """The Markdown report for one scale.

    ``verdicts``: claims.evaluate_all's table. ``info``: tidy.run_info over every run folder of the scale,
    failed ones included (their compute was spent too), with git_dirty where known. ``members``:
    tidy.diverged_members. ``analysis_commit``: the commit of the code that produced this report (with
    "(dirty)" when its analysis code had uncommitted changes). Figures are linked relative to
    results/<scale>/ and only for claims that had runs.
    """
    if scale not in claims.SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(claims.SCALES)}")
    lines = [f"# qrepro report: {scale} scale", ""]
    if scale == "smoke":
        lines += [SMOKE_BANNER, ""]
    elif scale == "quick":
        lines += [QUICK_NOTE, ""]
    counts = verdicts["verdict"].value_counts()
    members = tidy.diverged_members(pd.DataFrame(columns=["metric"]), pd.DataFrame(columns=["run_id"])) \
        if members is None else members
    diverged = divergence_summary(members)
    dirty = _dirty_runs(info)
    spent = compute_spent(info)
    total = spent.iloc[-1]
    commits = sorted(c for c in info["git_commit"].dropna().unique())
    unrecorded = int(total["no_wall_time"])
    n_members, n_diverged = int(diverged["members"].sum()), int(diverged["diverged"].sum())
    lines += [
        f"{len(verdicts)} verdicts on {verdicts['claim_id'].nunique()} claims (a claim judged per task, noise "
        f"model or family has one per scope): {counts.get(claims.REPRODUCED, 0)} reproduced, "
        f"{counts.get(claims.CONTRADICTED, 0)} contradicted, "
        f"{counts.get(claims.INCONCLUSIVE, 0)} inconclusive" + _not_run(verdicts) + ".",
        f"{int(total['runs'])} runs ({int(total['complete'])} complete, {int(total['diverged'])} diverged, "
        f"{int(total['failed'])} failed, by run status); compute spent {_hours(total['wall_time_s'])} of wall "
        "time (sum over run.json)"
        + (f"; a lower bound: {unrecorded} of the runs recorded no wall time" if unrecorded else "")
        + (f"; CPU time {_hours(total['cpu_time_s'])} over the {int(total['with_cpu_time'])} runs that record it"
           if total["with_cpu_time"] else "") + ".",
        f"Diverged members (seeds) by magnitude: {n_diverged} of {n_members} members with value estimates "
        f"(|Q estimate| above {tidy.Q_BOUND_MARGIN:g} x r_max / (1 - gamma), or the runner's per-member flag; "
        "section Divergence). They stay in every estimate: dropping them would favour the unstable settings. "
        "A member the runner stopped (non-finite loss; n_diverged in the result tables) keeps the evaluations "
        f"it logged before it stopped: its final score is their mean over the last {tidy.FINAL_FRACTION:.0%} of "
        "its own steps, its best score the best of them.",
        f"Training code: {', '.join(commits) if commits else 'unknown commit'}. Analysis code: {analysis_commit}.",
        (f"**Dirty checkout**: {len(dirty)} run(s) were trained from a checkout with uncommitted changes, so "
         f"their code is not exactly the commit above: {', '.join(dirty)}." if dirty
         else "Every run was trained from a clean checkout."),
        "",
        "Verdicts (analysis/claims.py): reproduced when the 95% stratified-bootstrap percentile CI excludes the "
        "null on the claimed side; contradicted when it excludes it on the opposite side; inconclusive when it "
        "contains the null or the runs are too few; not run when the claim has no runs at this scale (no evidence "
        "either way). Beside each: the published effect on the same statistic "
        "(ours smaller / larger / consistent with it), and the smallest effect these run counts detect with "
        f"{claims.POWER:.0%} power in a simulation of the same rule ({claims.POWER_SIMS} simulated experiments, "
        "normal scores with the observed within-task SD). Probability-of-improvement CIs use 2,000 bootstrap "
        "replications, the others 50,000 (rliable's defaults), unless the workflow's bootstrap_reps says less.",
        "",
        "## Claims",
        "",
    ]
    lines += _markdown_rows(
        ["claim", "scope", "verdict", "estimate [95% CI]", "null", "published (vs ours)", "detectable (80%)",
         "runs", "figure"],
        [[r["claim_id"], r["scope"], r["verdict"], _estimate(r), format_number(r["null"]), _published(r),
          format_number(r["detectable"]), str(r["n_runs"]), _figure_link(r)] for _, r in verdicts.iterrows()])
    for _, r in verdicts.iterrows():
        lines += [
            "", f"### {r['claim_id']} [{r['scope']}]: {r['verdict']}", "",
            f"- statement: {r['statement']}",
            f"- source: {r['source']}",
            f"- test: {_test(r)}, null {format_number(r['null'])}"
            + (f"; aggregation: {r['aggregation']}" if r["aggregation"] else ""),
            f"- estimate [95% CI]: {_estimate(r) or 'none'}",
            f"- published: {_published(r) or 'none'}" + (f" ({r['published_note']})" if r["published_note"] else ""),
            f"- detectable with 80% power at these runs: {format_number(r['detectable']) or 'none'}",
            f"- runs: {r['n_runs']}" + (f" ({r['runs']})" if r["runs"] else ""),
            f"- budget: {_budget(r)}",
            f"- why: {r['reason']}",
            *_counterpart(r, verdicts),
        ]
        if _figure_link(r):
            lines += ["", f"![{r['claim_id']}]({r['figure']}.{FIGURE_EXT})"]
    lines += ["", "## Published numbers and their protocols", "",
              "Each published number beside ours was measured under its source's protocol; ours under the "
              "protocol in each row's `protocol` column (Atari default nature, evaluation episodes capped at "
              "18,000 frames; machado 108,000). No published number here was measured under machado.", ""]
    protocols = reference.published_protocols()
    lines += _markdown_rows(["published numbers", "their protocol", "compare with our"],
                            [[r["source"], r["protocol"], r["compare_with"]] for _, r in protocols.iterrows()])
    lines += ["", "## Divergence", ""]
    if members.empty:
        lines += ["No run logged value estimates."]
    else:
        lines += _markdown_rows(["suite", "members", "judged", "diverged"],
                                [[d["suite"], str(int(d["members"])), str(int(d["judged"])), str(int(d["diverged"]))]
                                 for _, d in diverged.iterrows()])
        bad = members[members["diverged"]]
        if not bad.empty:
            by_run = bad.groupby(["run_id", "bound"], sort=True).agg(
                seeds=("seed", lambda s: " ".join(map(str, sorted(s)))), largest=("max_abs_q", "max")).reset_index()
            lines += ["", "Diverged members (largest |Q estimate| against the bound):", ""]
            folders = dict(zip(info["run_id"], info["run_dir"], strict=True)) if "run_dir" in info.columns else {}
            lines += _markdown_rows(["run", "seeds", "largest abs Q", "bound"],
                                    [[folders.get(b["run_id"], b["run_id"]), b["seeds"], f"{b['largest']:.3g}",
                                      format_number(b["bound"])] for _, b in by_run.iterrows()])
    lines += ["", "## Compute spent", ""]
    lines += _markdown_rows(
        ["suite", "runs", "complete", "diverged", "failed", "no wall time", "wall time", "CPU time (runs)"],
        [[s["suite"], *(str(int(s[c])) for c in ("runs", "complete", "diverged", "failed", "no_wall_time")),
          _hours(s["wall_time_s"]),
          f"{_hours(s['cpu_time_s'])} ({int(s['with_cpu_time'])})" if s["with_cpu_time"] else "not recorded"]
         for _, s in spent.iterrows()])
    return "\n".join(lines) + "\n"


def write_report(text: str, path: str | Path) -> Path:
    """Write the report atomically (a reader never sees half a report)."""
    return tidy.atomic_write(path, lambda tmp: tmp.write_text(text))
