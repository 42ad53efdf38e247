"""Result tables as DataFrames, and their CSV, Markdown and LaTeX renderings (kept separate).

A result table carries its estimates with 95% stratified-bootstrap CIs (columns ``x``, ``x_ci_low``,
``x_ci_high``), the number of runs, the budget in ``agent_steps`` and in ``frames`` (DESIGN.md: always say
which), the protocol, and, where a paper published a comparable number, that number and its source. The
renderers merge each CI triplet into "x [low, high]" and turn sources into numbered notes under the table.
Markdown and LaTeX are written here rather than through pandas, whose renderers need tabulate and jinja2,
which qrepro does not declare.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import reference, stats, tidy

CI_SUFFIXES = ("_ci_low", "_ci_high")
# van Hasselt et al. 2016 Table 1 columns for our algorithm names.
VAN_HASSELT_COLUMNS = {"dqn": "dqn", "double_dqn": "ddqn"}


def _mean_and_iqm(name: str, scores: np.ndarray, reps: int, base_seed: int) -> dict[str, float]:
    point, interval = stats.bootstrap_interval(
        name, scores[:, None], lambda s: np.array([np.mean(s), stats.iqm(s)]), reps=reps, base_seed=base_seed)
    return {"mean": point[0], "mean_ci_low": interval[0, 0], "mean_ci_high": interval[1, 0],
            "iqm": point[1], "iqm_ci_low": interval[0, 1], "iqm_ci_high": interval[1, 1]}


def _budget(runs: pd.DataFrame) -> dict:
    return {"n_runs": len(runs), "agent_steps": runs["step"].max(), "frames": runs["frames"].max(),
            "protocol": ", ".join(sorted(runs["protocol"].unique()))}


def _mnih2015_dqn(human_table: str | None) -> pd.DataFrame:
    """Mnih et al. 2015 DQN scores per game, normalized with ``human_table`` when ours are."""
    published = reference.mnih2015_scores().rename(columns={"dqn": "published"})[["game", "published"]]
    if human_table is not None:
        ref = reference.human_random_scores(human_table).set_index("game")
        published = published[published["game"].isin(ref.index)]
        random, human = published["game"].map(ref["random"]), published["game"].map(ref["human"])
        published = published.assign(published=(published["published"] - random) / (human - random))
    source = f"{reference.SOURCES[reference.MNIH2015]}; 50M agent steps = 200M frames"
    return published.assign(published_source=source)


def result_table(df: pd.DataFrame, metric: str = "eval_return", *, last_fraction: float = tidy.FINAL_FRACTION,
                 human_table: str | None = None, reps: int = stats.AGGREGATE_REPS, base_seed: int = 0,
                 step_units: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (algo, env): mean and IQM of the final ``metric`` over seeds with CIs, n_runs, budget
    (agent steps and frames), protocol, n_diverged (members the runner stopped for a non-finite loss, scored
    on what they logged before: tidy.stopped_members), and Mnih et al. 2015's DQN score beside ``dqn`` on its
    7 games.

    With ``human_table`` scores (and the published one) are human-normalized against that table.
    ``step_units``: algo -> what its step column counts where it is not agent steps (fitted Q-iteration:
    iterations); such rows give their count under ``steps`` with the unit in ``step_unit``, and no frames.
    """
    scores = tidy.final_scores(df, metric, last_fraction=last_fraction)
    if human_table is not None:
        scores = tidy.human_normalized(scores, human_table)
    stopped = tidy.stopped_members(df)
    rows = []
    for (algo, env), runs in scores.groupby(["algo", "env"], sort=True):
        estimates = _mean_and_iqm(f"{algo}|{env}", runs["score"].to_numpy(float), reps, base_seed)
        budget = _budget(runs)
        unit = (step_units or {}).get(algo)
        if step_units is not None:
            budget = {"n_runs": budget["n_runs"], "steps": budget["agent_steps"],
                      "step_unit": unit or "agent steps", "frames": math.nan if unit else budget["frames"],
                      "protocol": budget["protocol"]}
        n_diverged = sum((algo, env, seed) in stopped for seed in runs["seed"])
        rows.append({"algo": algo, "env": env, **estimates, **budget, "n_diverged": n_diverged,
                     "human_table": human_table or ""})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    published = _mnih2015_dqn(human_table).assign(algo="dqn")
    table["game"] = table["env"].map(lambda env: reference.atari_game_key(env) if reference.is_atari(env) else None)
    table = table.merge(published, on=["algo", "game"], how="left").drop(columns="game")
    if human_table is None:
        table = _with_minatar_curves(table)
    table["published_source"] = table["published_source"].fillna("")
    return table


def _with_minatar_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Young & Tian 2019's DQN return beside ``dqn`` on a MinAtar game where their curve was read at the
    row's frame count (analysis/reference: training-episode returns, so context, not a target)."""
    curves = reference.minatar_dqn_curves().dropna(subset=["return"])
    curves = curves.rename(columns={"return": "published_minatar"})[["env", "algo", "frames", "published_minatar"]]
    merged = table.merge(curves, on=["env", "algo", "frames"], how="left")
    found = merged["published_minatar"].notna()
    merged.loc[found, "published"] = merged.loc[found, "published_minatar"]
    merged.loc[found, "published_source"] = f"{reference.SOURCES['minatar_curves']}, at the same frame count"
    return merged.drop(columns="published_minatar")


def aggregate_table(df: pd.DataFrame, metric: str = "eval_return", *, human_table: str = reference.DQN_ZOO,
                    last_fraction: float = tidy.FINAL_FRACTION, reps: int = stats.AGGREGATE_REPS,
                    base_seed: int = 0) -> pd.DataFrame:
    """Atari aggregate (Agarwal et al. 2021): per algorithm, human-normalized IQM, median, mean and
    optimality gap with CIs over all games, n_runs (per game), n_tasks, budget, protocol, the human table,
    and van Hasselt et al. 2016's median and mean (no-op starts, 49 games) beside dqn and double_dqn.
    """
    scores = tidy.human_normalized(tidy.final_scores(df, metric, last_fraction=last_fraction), human_table)
    intervals = stats.aggregate_intervals(tidy.score_matrix(scores), reps=reps, base_seed=base_seed)
    wide = intervals.pivot(index="algo", columns="aggregate", values=["estimate", "ci_low", "ci_high"])
    table = pd.DataFrame(index=wide.index)
    for aggregate in stats.AGGREGATES:
        table[aggregate] = wide[("estimate", aggregate)]
        table[f"{aggregate}_ci_low"] = wide[("ci_low", aggregate)]
        table[f"{aggregate}_ci_high"] = wide[("ci_high", aggregate)]
    # n_runs here is runs per game, as rliable counts them.
    counts = intervals.groupby("algo")[["n_runs", "n_tasks"]].first()
    budget = pd.DataFrame.from_dict({algo: _budget(runs) for algo, runs in scores.groupby("algo")},
                                    orient="index").drop(columns="n_runs")
    table = table.join(counts).join(budget).reset_index()
    table["human_table"] = human_table
    summary = reference.ddqn_summary()
    no_op = summary[summary["evaluation"] == "no_op"].set_index("statistic")
    # van Hasselt et al. report percentages of human performance; ours are fractions (1 = human).
    for statistic in ("median", "mean"):
        column = no_op.loc[f"{statistic}_human_normalized_pct"]
        table[f"published_{statistic}"] = table["algo"].map(
            lambda a, c=column: c[VAN_HASSELT_COLUMNS[a]] / 100 if a in VAN_HASSELT_COLUMNS else math.nan)
    table["published_source"] = np.where(
        table["algo"].isin(list(VAN_HASSELT_COLUMNS)),
        f"{summary.attrs['source']}; no-op starts, 49 games, 200M frames, the paper's own human scores", "")
    return table


def naf_vs_ddpg_table(df: pd.DataFrame, *, algos: Sequence[str] = ("ddpg", "naf"), within: float = 0.05,
                      reps: int = stats.AGGREGATE_REPS, base_seed: int = 0) -> pd.DataFrame:
    """Gu et al. 2016 Table 1 analogue, one row per (env, algo): best test return and episodes to within 5% of
    it (tidy.best_scores), each a mean over seeds with CI, beside the paper's number for the closest of its
    own tasks (reference.GU2016_DOMAIN_ANALOGUE; different task, so context rather than a target).
    """
    best = tidy.best_scores(df[df["algo"].isin(algos)], within=within)
    published = reference.naf_vs_ddpg_table1().set_index("domain")
    rows = []
    for (env, algo), runs in best.groupby(["env", "algo"], sort=True):
        matrix = runs[["best", "episodes_to_within"]].to_numpy(float)
        point, interval = stats.bootstrap_interval(f"{algo}|{env}|best", matrix, lambda s: s.mean(axis=0),
                                                   reps=reps, base_seed=base_seed)
        row = {"env": env, "algo": algo, "best": point[0], "best_ci_low": interval[0, 0],
               "best_ci_high": interval[1, 0], "episodes_to_within": point[1],
               "episodes_to_within_ci_low": interval[0, 1], "episodes_to_within_ci_high": interval[1, 1],
               **_budget(runs)}
        domain = reference.GU2016_DOMAIN_ANALOGUE.get(env.replace("-fixedH", ""))
        has_published = domain is not None and f"{algo}_best" in published.columns
        row.update({
            "published_domain": domain if has_published else "",
            "published_best": published.loc[domain, f"{algo}_best"] if has_published else math.nan,
            "published_episodes": published.loc[domain, f"{algo}_episodes"] if has_published else math.nan,
            "published_source": f"{reference.SOURCES['naf_vs_ddpg']}; the paper's own {domain} task"
            if has_published else "",
        })
        rows.append(row)
    return pd.DataFrame(rows)


# Significant digits of every printed estimate (ours): three, kept with trailing zeros so that a column reads at
# one precision (0.500, 1.23, 0.0298), enough for CIs that rarely pin a fourth digit.
DIGITS = 3


def _missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def format_number(value, digits: int = DIGITS) -> str:
    """A cell's text: integers whole, values of 1000 or more rounded to whole numbers, others to ``digits``
    significant digits (trailing zeros kept), missing values empty."""
    if _missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        return str(value)
    # Counts are integers; a float that happens to be whole (a CI bound of 1.0) keeps its significant digits.
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    # Large scores (Atari) read better whole; small errors (max |Q - Q*|) need significant digits.
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:#.{digits}g}".rstrip(".")


def format_interval(value, low, high, digits: int = DIGITS) -> str:
    """"estimate [low, high]", the one way every table and the report print a CI; the estimate alone where
    there is no interval or it has no width (an exact value: every run gives the same number)."""
    if _missing(value):
        return ""
    if _missing(low) or _missing(high) or low == high == value:
        return format_number(value, digits)
    return f"{format_number(value, digits)} [{format_number(low, digits)}, {format_number(high, digits)}]"


def format_table(table: pd.DataFrame, digits: int = DIGITS) -> tuple[pd.DataFrame, list[str]]:
    """Strings for display: each ``x``/``x_ci_low``/``x_ci_high`` triplet becomes "x [low, high]" and each
    distinct ``published_source`` becomes a note number "[i]"; columns empty in every row are left out.
    Returns the table and the notes in order."""
    notes = [s for s in dict.fromkeys(table.get("published_source", pd.Series(dtype=str))) if s]
    out = {}
    for column in table.columns:
        if column.endswith(CI_SUFFIXES):
            continue
        values = table[column]
        if column == "published_source":
            out["source"] = [f"[{notes.index(s) + 1}]" if s else "" for s in values]
        elif all(f"{column}{suffix}" in table.columns for suffix in CI_SUFFIXES):
            triplets = zip(values, table[f"{column}_ci_low"], table[f"{column}_ci_high"], strict=True)
            out[column] = [format_interval(v, lo, hi, digits) for v, lo, hi in triplets]
        else:
            out[column] = [format_number(v, digits) for v in values]
    out = {column: cells for column, cells in out.items() if any(c != "" for c in cells)}
    return pd.DataFrame(out, columns=list(out)), notes


def to_markdown(table: pd.DataFrame, digits: int = DIGITS, *, caption: str = "",
                notes: Sequence[str] = ()) -> str:
    """A GitHub Markdown table, CIs in brackets, the caption above it, ``notes`` (method, compute) and the
    sources as numbered notes below it."""
    shown, sources = format_table(table, digits)

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [f"**{caption}**", ""] if caption else []
    lines += [cells(shown.columns), "|" + "---|" * len(shown.columns)]
    lines += [cells(row) for row in shown.itertuples(index=False)]
    if notes or sources:
        lines += ["", *(f"- {note}" for note in notes),
                  *(f"- [{i}] {source}" for i, source in enumerate(sources, start=1))]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


# In LaTeX's default OT1 encoding < > | print as other glyphs (inverted marks, an em dash): math mode instead.
_LATEX_SPECIAL.update({"<": r"$<$", ">": r"$>$", "|": r"$|$"})


def _latex_escape(text: str) -> str:
    parts = str(text).split("->")
    return r"$\to$".join("".join(_LATEX_SPECIAL.get(ch, ch) for ch in part) for part in parts)


def to_latex(table: pd.DataFrame, digits: int = DIGITS, *, caption: str = "", label: str = "",
             notes: Sequence[str] = ()) -> str:
    """A ``table`` float that compiles in a plain LaTeX document (no packages: rules are ``\\hline``): the
    ``tabular`` with CIs in brackets, the caption and label, then ``notes`` (method, compute) and the
    sources as numbered notes, in footnote size."""
    shown, sources = format_table(table, digits)
    lines = [r"\begin{table}[ht]", r"\centering", r"\footnotesize"]
    lines += [rf"\caption{{{_latex_escape(caption)}}}"] if caption else []
    lines += [rf"\label{{{label}}}"] if label else []
    lines += [r"\begin{tabular}{" + "l" * len(shown.columns) + "}", r"\hline",
              " & ".join(_latex_escape(c) for c in shown.columns) + r" \\", r"\hline"]
    lines += [" & ".join(_latex_escape(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}"]
    lines += [rf"\par {_latex_escape(note)}" for note in notes]
    lines += [rf"\par [{i}] {_latex_escape(source)}" for i, source in enumerate(sources, start=1)]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table_formats(table: pd.DataFrame, path_without_ext: str | Path, digits: int = DIGITS, *,
                        caption: str = "", notes: Sequence[str] = ()) -> tuple[Path, Path, Path]:
    """Write ``<path>.csv`` (full precision), ``<path>.md`` and ``<path>.tex`` (label tab:<file name>), each
    atomically."""
    base = Path(path_without_ext)
    label = f"tab:{base.name}"
    csv = tidy.atomic_write(f"{base}.csv", lambda tmp: table.to_csv(tmp, index=False))
    md = tidy.atomic_write(f"{base}.md", lambda tmp: tmp.write_text(
        to_markdown(table, digits, caption=caption, notes=notes)))
    tex = tidy.atomic_write(f"{base}.tex", lambda tmp: tmp.write_text(
        to_latex(table, digits, caption=caption, label=label, notes=notes)))
    return csv, md, tex
