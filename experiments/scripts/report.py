"""Snakemake script of rule replication_report: every claim of analysis/claims.yaml evaluated on this scale's
tidy tables -> results/<scale>/report.md, the verdicts as a table (CSV, Markdown, LaTeX) and
results/<scale>/provenance.csv (one row per run folder the numbers come from).

Claims whose suite did not run get the verdict "not run" (no evidence either way), so the report always
lists every claim.
"""


import subprocess
import sys
import traceback
from pathlib import Path

import pandas as pd

from analysis import claims, report, tables, tidy

VERDICT_COLUMNS = ["claim_id", "scope", "suite", "verdict", "estimate", "estimate_ci_low", "estimate_ci_high", "null",
                   "published", "versus_published", "detectable", "comparison", "a", "b", "n_runs", "runs",
                   "aggregation", "budget", "budget_fraction", "published_budget", "reason", "source", "statement",
                   "counterpart"]
ANALYSIS_PATHS = ("analysis", "experiments")


def analysis_commit(root: Path) -> str:
    """The commit of the analysis code, "(dirty)" when analysis/ or experiments/ had uncommitted changes
    (results/ being rewritten by this very workflow does not count)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *ANALYSIS_PATHS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" (dirty)" if dirty else "")


def main(snakemake) -> None:
    scale = snakemake.wildcards.scale
    claim_list = claims.load_claims(snakemake.input.claims)
    df = pd.concat([pd.read_parquet(p) for p in snakemake.input.tidy], ignore_index=True)
    verdicts = claims.evaluate_all(claim_list, df, scale, reps=snakemake.params.reps)
    # one row per run folder: a run two suites read (a scale's reuse key) is counted once, in the suite that
    # trained it (its run.json's), so compute spent is not counted twice
    provenance = pd.concat([pd.read_csv(p) for p in snakemake.input.provenance], ignore_index=True)
    provenance = provenance.drop_duplicates("run_dir", ignore_index=True)
    tidy.atomic_write(snakemake.output.provenance, lambda tmp: provenance.to_csv(tmp, index=False))
    run_config = provenance[["run_id", *(c for c in ("gamma", "clip_rewards") if c in provenance.columns)]]
    members = tidy.diverged_members(df, run_config) if "gamma" in run_config.columns else \
        tidy.diverged_members(df.iloc[:0], run_config)
    commit = analysis_commit(Path(snakemake.scriptdir).resolve().parents[1])
    text = report.render_report(verdicts, provenance, scale, members=members, analysis_commit=commit)
    report.write_report(text, snakemake.output.report)
    table = verdicts.rename(columns={"ci_low": "estimate_ci_low", "ci_high": "estimate_ci_high"})[VERDICT_COLUMNS]
    notes = ["Verdicts against the null: reproduced when the 95% stratified-bootstrap percentile CI excludes it "
             "on the claimed side, contradicted on the opposite side, inconclusive otherwise; detectable: the "
             "effect reproduced with 80% power at these run counts (analysis/claims.py).",
             f"Analysis code: {commit}."]
    tables.write_table_formats(table, Path(snakemake.output.claims_csv).with_suffix(""),
                               caption=f"Replication verdicts, {scale} scale, one row per claim and scope.",
                               notes=notes)
    counts = verdicts["verdict"].value_counts().to_dict()
    print(f"report ({scale}): {len(verdicts)} claims {counts}; {len(provenance)} runs")


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
