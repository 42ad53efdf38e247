"""Figures as pure functions: a tidy DataFrame (or a statistics table from analysis.stats) in, a Figure out.

Figures are built as ``matplotlib.figure.Figure`` objects, never through pyplot, so no global figure state
is touched and any backend works; saving goes through Agg (PNG) and the PDF backend. Seaborn supplies the
style and the colour-blind palette. Curves are summarised here, not by seaborn's estimators, so the plotted
numbers are exactly the documented ones: the mean over seeds with its 95% percentile-bootstrap CI (the interval
the tables and verdicts use), computed at equal agent steps (every seed evaluates at the same steps) and placed
at the median x; van Hasselt et al.'s Fig. 3 analogue keeps the paper's median and 10-90% band. Axes and legends
use the names of ``LABELS``, with units; categorical settings are drawn as separate points, never joined.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import reference, stats, tidy

BAND = (0.1, 0.9)  # van Hasselt et al. 2016, Fig. 3: "median ... 10% and 90% quantiles" over seeds
# van Hasselt et al. 2016, Fig. 3 draws these games' value estimates on a log scale: DQN's estimates explode.
VAN_HASSELT_LOG_SCALE_GAMES = ("wizard_of_wor", "asterix")
AGGREGATE_TITLES = {"iqm": "IQM", "median": "Median", "mean": "Mean", "optimality_gap": "Optimality Gap"}
PANEL_SIZE = (3.4, 2.6)  # inches per panel
CI_REPS = 2_000  # bootstrap replications of a plotted mean's 95% CI (rliable's for its profiles)
LABELS = {
    "dqn": "DQN", "double_dqn": "Double DQN", "dueling_dqn": "Dueling DQN", "per_dqn": "DQN + prioritized replay",
    "nstep_dqn": "DQN + 3-step returns", "ddpg": "DDPG", "naf": "NAF", "naf_imagination": "NAF + imagination",
    "naf_imagination_nn": "NAF + imagination (NN model)", "naf_imagination_ilqg": "NAF + imagination + iLQG",
    "sampled_q": "uniform sampled max", "cem_q": "CEM max",
    "q_learning": "Q-learning", "fitted_q": "fitted Q-iteration",
    "max_estimator": "max estimator (Q-learning)", "double_estimator": "double estimator (Double Q-learning)",
    "sensitivity": "DQN and its ablations",
    "num_actions": "number of actions", "replay_size": "replay buffer size (transitions)",
    "target_period": "target update period (gradient updates)", "polyak_tau": "Polyak rate tau (per update)",
    "batch_size": "minibatch size (transitions)", "lr": "Adam learning rate", "loss": "TD loss",
    "ablation": "change to the baseline DQN", "step": "agent steps", "episodes": "training episodes",
    "frames": "emulator frames", "eval_return": "test return", "q_estimate": "value estimate",
    "estimation_bias": "bias: estimate - true value", "fit_estimation_bias": "bias: estimate - true value",
    "q_error_max": "max |Q - Q*|", "greedy_value_gap": "V* - V(greedy policy)",
}


# Values of categorical settings as a reader names them (the ablation tags of the sensitivity suite, losses).
CATEGORY_LABELS = {"baseline": "baseline", "double": "double Q", "dueling": "dueling", "mse": "squared loss",
                   "huber": "Huber loss", "n_step": "3-step return", "per": "prioritized replay"}


def label(name) -> str:
    """The reader's name of a column, metric or group (``LABELS``), else the name itself."""
    return LABELS.get(str(name), str(name))


def _figure(nrows: int, ncols: int, sharex: bool | str = False) -> tuple[Figure, np.ndarray]:
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig = Figure(figsize=(PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=sharex)
    return fig, axes


# One colour per method in every figure (indices into seaborn's 10-colour "colorblind" palette; DQN, the
# baseline of every ablation, in dark grey), so that a method looks the same from figure to figure. Methods
# drawn together never share one; names not listed take the palette's unused colours in order.
_CB = sns.color_palette("colorblind", 10)
METHOD_COLORS = {
    "dqn": (0.25, 0.25, 0.25), "double_dqn": _CB[0], "dueling_dqn": _CB[2], "nstep_dqn": _CB[3], "per_dqn": _CB[4],
    "per_rank_dqn": _CB[5], "combined_dqn": _CB[8], "double_dqn_clip": _CB[9],
    "naf": _CB[0], "ddpg": _CB[1], "naf_imagination": _CB[2], "naf_imagination_ilqg": _CB[3],
    "naf_imagination_nn": _CB[4], "sampled_q": _CB[5], "per_ddpg": _CB[6], "double_naf": _CB[8], "cem_q": _CB[9],
    "q_learning": _CB[0], "fitted_q": _CB[1], "double_estimator": _CB[0], "max_estimator": _CB[3],
}


def _palette(names: Sequence[str]) -> dict[str, tuple]:
    """A colour per name: METHOD_COLORS' for known methods, the palette's unused ones for the rest."""
    known = {n: METHOD_COLORS[str(n)] for n in names if str(n) in METHOD_COLORS}
    spare = [c for c in sns.color_palette("colorblind", max(10, len(names))) if c not in known.values()]
    others = [n for n in names if n not in known]
    return {n: known[n] if n in known else spare[others.index(n) % len(spare)] for n in names}


def _require(rows: pd.DataFrame, what: str) -> None:
    if rows.empty:
        raise ValueError(f"no rows for {what}")


def median_band(rows: pd.DataFrame, x: str = "step", value: str = "value") -> pd.DataFrame:
    """Median and 10-90% quantiles of ``value`` over seeds per agent step: columns x, median, low, high."""
    groups = rows.groupby("step", sort=True)
    return pd.DataFrame({
        "x": groups[x].median(), "median": groups[value].median(),
        "low": groups[value].quantile(BAND[0]), "high": groups[value].quantile(BAND[1]),
    }).reset_index(drop=True)


def mean_ci(values: np.ndarray, name: str, reps: int = CI_REPS) -> tuple[float, float, float]:
    """Mean of ``values`` and its 95% percentile-bootstrap CI; the stream is seeded by ``name`` alone."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(stats.name_seed(name))
    means = values[rng.integers(0, len(values), size=(reps, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(values.mean()), float(low), float(high)


def mean_band(rows: pd.DataFrame, x: str = "step", value: str = "value", name: str = "") -> pd.DataFrame:
    """Mean over seeds and its 95% bootstrap CI per agent step: columns x (median over seeds), median (the
    mean; the column name is the band's centre line), low, high."""
    out = []
    for step, group in rows.groupby("step", sort=True):
        centre, low, high = mean_ci(group[value].to_numpy(), f"{name}|{step}")
        out.append({"x": group[x].median(), "median": centre, "low": low, "high": high})
    return pd.DataFrame(out, columns=["x", "median", "low", "high"])


def _draw_band(ax: Axes, summary: pd.DataFrame, label: str, color, marker: str | None = None) -> None:
    ax.plot(summary["x"], summary["median"], label=label, color=color, marker=marker)
    ax.fill_between(summary["x"], summary["low"], summary["high"], color=color, alpha=0.2, linewidth=0)


def _final_true_value(rows: pd.DataFrame) -> float | None:
    """Median over seeds of each seed's last ``true_value``: true discounted return of its final policy."""
    true = rows[rows["metric"] == "true_value"].sort_values("step", kind="stable")
    if true.empty:
        return None
    return float(true.groupby("seed")["value"].last().median())


def overestimation_curves(df: pd.DataFrame, *, algos: Sequence[str] = ("dqn", "double_dqn"),
                          games: Sequence[str] | None = None, x: str = "frames",
                          log_scale_games: Sequence[str] = VAN_HASSELT_LOG_SCALE_GAMES) -> Figure:
    """van Hasselt et al. 2016, Fig. 3: value estimates (``q_estimate``) of each algorithm over training, one
    column per game, with the true value of its final policy as a dashed horizontal line; the score curves
    (``eval_return``) beneath. Lines are labelled by algorithm and "<algo> true value".
    """
    rows = df[df["algo"].isin(algos)]
    _require(rows, f"algos {list(algos)}")
    games = sorted(rows["env"].unique()) if games is None else list(games)
    colors = _palette(list(algos))
    fig, axes = _figure(2, len(games), sharex="col")
    for j, env in enumerate(games):
        top, bottom = axes[0, j], axes[1, j]
        for algo in algos:
            mine = rows[(rows["env"] == env) & (rows["algo"] == algo)]
            estimates = mine[mine["metric"] == "q_estimate"]
            if estimates.empty:
                continue
            _draw_band(top, median_band(estimates, x), algo, colors[algo])
            true_value = _final_true_value(mine)
            if true_value is not None:
                top.axhline(true_value, color=colors[algo], linestyle="--", label=f"{algo} true value")
            _draw_band(bottom, median_band(mine[mine["metric"] == "eval_return"], x), algo, colors[algo])
        game = reference.atari_game_key(env) if reference.is_atari(env) else None
        top.set_title(game or env)
        if game in log_scale_games:  # van Hasselt's log axes: Atari games only
            top.set_yscale("log")
        bottom.set_xlabel(x)
    axes[0, 0].set_ylabel("value estimate")
    axes[1, 0].set_ylabel("score")
    axes[0, 0].legend(fontsize="small")
    return fig


def learning_curves(df: pd.DataFrame, metric: str = "eval_return", *, x: str = "step",
                    algos: Sequence[str] | None = None, envs: Sequence[str] | None = None,
                    yscale: str = "linear", ylabel: str | None = None, xlabel: str | None = None) -> Figure:
    """``metric`` over training, a panel per environment, per algorithm a line at the mean over seeds with
    its 95% CI band."""
    rows = df[df["metric"] == metric]
    if algos is not None:
        rows = rows[rows["algo"].isin(algos)]
    _require(rows, f"metric {metric!r}")
    algos = sorted(rows["algo"].unique()) if algos is None else list(algos)
    envs = sorted(rows["env"].unique()) if envs is None else list(envs)
    colors = _palette(algos)
    fig, axes = _figure(1, len(envs))
    for ax, env in zip(axes[0], envs, strict=True):
        for algo in algos:
            mine = rows[(rows["env"] == env) & (rows["algo"] == algo)]
            if not mine.empty:
                _draw_band(ax, mean_band(mine, x, name=f"{algo}|{env}"), label(algo), colors[algo])
        ax.set_title(env)
        ax.set_xlabel(xlabel or label(x))
        ax.set_yscale(yscale)
    axes[0, 0].set_ylabel(ylabel or label(metric))
    _legend_below(fig, "mean, 95% CI")
    return fig


def naf_vs_ddpg_curves(df: pd.DataFrame, algos: Sequence[str] = ("ddpg", "naf")) -> Figure:
    """Gu et al. 2016, Fig. 1 analogue: test return of DDPG and NAF against training episodes."""
    return learning_curves(df, "eval_return", x="episodes", algos=algos, ylabel="test return")


def imagination_curves(df: pd.DataFrame, algos: Sequence[str] | None = None) -> Figure:
    """Gu et al. 2016, Fig. 2 analogue: NAF with and without imagination rollouts (and their ablations)
    against training episodes, the unit in which the paper states its 2-5x data efficiency."""
    return learning_curves(df, "eval_return", x="episodes", algos=algos, ylabel="test return")


def tabular_convergence(df: pd.DataFrame, metric: str = "q_error_max",
                        algos: Sequence[str] | None = None) -> Figure:
    """max_{s,a} |Q - Q*| against agent steps on each small MDP, log scale: converging to Q* heads to 0."""
    return learning_curves(df, metric, x="step", algos=algos, yscale="log", ylabel="max |Q - Q*|")


def _draw_final_vs(ax: Axes, scores: pd.DataFrame, column: str, categories: list | None, name: str,
                   color) -> None:
    rows = []
    for value, group in scores.groupby(column, sort=True):
        centre, low, high = mean_ci(group["score"].to_numpy(), f"{name}|{value}")
        rows.append({column: value, "median": centre, "low": low, "high": high})
    summary = pd.DataFrame(rows)
    if categories is None:
        summary["x"], run_x = summary[column], scores[column]
        _draw_band(ax, summary, label(name), color, marker="o")
    else:
        # Categories have no order between them: points with their CIs, no line joining them.
        position = {c: i for i, c in enumerate(categories)}
        summary["x"], run_x = summary[column].map(position), scores[column].map(position)
        errors = [summary["median"] - summary["low"], summary["high"] - summary["median"]]
        ax.errorbar(summary["x"], summary["median"], yerr=errors, fmt="o", color=color, capsize=3,
                    label=label(name))
    ax.scatter(run_x, scores["score"], color=color, s=8, alpha=0.5, label="_nolegend_")


def _final_vs_value(df: pd.DataFrame, column: str, metric: str, last_fraction: float, hue: str,
                    ylabel: str) -> Figure:
    rows = df[df["metric"] == metric]
    _require(rows, f"metric {metric!r}")
    if column not in rows.columns:
        raise ValueError(f"no column {column!r}; load runs with tidy.load_runs(..., config_keys=[...])")
    scores = tidy.final_scores(rows, metric, last_fraction=last_fraction, keys=[hue, "env", "seed", column])
    values = sorted(scores[column].unique())
    numeric = pd.api.types.is_numeric_dtype(scores[column]) and not pd.api.types.is_bool_dtype(scores[column])
    categories = None if numeric else values
    groups = sorted(scores[hue].unique())
    colors = _palette(groups)
    envs = sorted(scores["env"].unique())
    fig, axes = _figure(1, len(envs))
    for ax, env in zip(axes[0], envs, strict=True):
        for group in groups:
            mine = scores[(scores["env"] == env) & (scores[hue] == group)]
            if not mine.empty:
                _draw_final_vs(ax, mine, column, categories, str(group), colors[group])
        if categories is not None:
            ax.set_xticks(range(len(categories)), [CATEGORY_LABELS.get(str(c), str(c)) for c in categories],
                          rotation=30, ha="right")
            ax.set_xlim(-0.5, len(categories) - 0.5)
        # Swept sizes and rates span orders of magnitude (replay 1e4..1e6, lr 1e-5..1e-3).
        elif values[0] > 0 and values[-1] / values[0] >= 100:
            ax.set_xscale("log")
        ax.set_title(env)
        ax.set_xlabel(label(column))
    axes[0, 0].set_ylabel(ylabel)
    _legend_below(fig)
    return fig


def _legend_below(fig: Figure, title: str = "mean, 95% CI; dots: runs") -> None:
    """One legend for all panels, under them, so it never covers data (one column under a single panel). Its
    entries are every panel's, once each: a method missing from the first panel is still named."""
    entries: dict[str, object] = {}
    for ax in fig.axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(name, handle)
    handles, labels = list(entries.values()), list(entries)
    ncols = min(1 if len(fig.axes) == 1 else 3, len(labels))
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + 0.22 * (1 + -(-len(labels) // ncols)))  # room for the legend's rows
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", title=title,
               title_fontsize="small")


def sensitivity(df: pd.DataFrame, hyperparameter: str, *, metric: str = "eval_return",
                last_fraction: float = tidy.FINAL_FRACTION, hue: str = "algo") -> Figure:
    """Final performance against a hyperparameter's value (a column, e.g. ``replay_size``, ``double``), one
    panel per environment, one labelled median line per ``hue`` group, each run as a dot (Lange's tutorial
    sweeps; an on/off ablation is a two-valued hyperparameter)."""
    return _final_vs_value(df, hyperparameter, metric, last_fraction, hue,
                           f"{label(metric)} (last {last_fraction:.0%})")


def overestimation_bias(df: pd.DataFrame, *, metric: str = "estimation_bias",
                        num_actions: str = "num_actions") -> Figure:
    """van Hasselt et al. 2016, Fig. 1 analogue: bias of the max estimator and of the double estimator
    against the number of actions (one labelled line per estimator, the ``algo`` column); each run's point is
    the mean of all its ``metric`` observations."""
    fig = _final_vs_value(df, num_actions, metric, 1.0, "algo", label(metric))
    exact = df[df["metric"] == "exact_bias"]
    for ax in fig.axes:
        mine = exact[exact["env"] == ax.get_title()]
        for i, (_, rows) in enumerate(mine.groupby("algo", sort=True)):
            theory = rows.groupby(num_actions)["value"].mean()
            ax.plot(theory.index, theory.to_numpy(), color="black", linestyle="--", linewidth=1,
                    label="exact expectation" if i == 0 else "_nolegend_")
    for legend in fig.legends:
        legend.remove()
    _legend_below(fig)
    return fig


def aggregate_intervals_plot(intervals: pd.DataFrame, score_label: str = "human normalized score") -> Figure:
    """Agarwal et al. 2021, Fig. 1 style: one panel per aggregate (from stats.aggregate_intervals), a bar over
    each algorithm's 95% CI and a black tick at its point estimate (a line labelled by the algorithm)."""
    _require(intervals, "aggregate intervals")
    aggregates = list(dict.fromkeys(intervals["aggregate"]))
    algos = sorted(intervals["algo"].unique())
    colors = _palette(algos)
    fig, axes = _figure(1, len(aggregates))
    for j, (ax, aggregate) in enumerate(zip(axes[0], aggregates, strict=True)):
        rows = intervals[intervals["aggregate"] == aggregate].set_index("algo")
        for i, algo in enumerate(algos):
            row = rows.loc[algo]
            ax.barh(i, row["ci_high"] - row["ci_low"], left=row["ci_low"], height=0.6, color=colors[algo],
                    alpha=0.75)
            ax.plot([row["estimate"]] * 2, [i - 0.3, i + 0.3], color="black", label=label(algo))
        ax.set_yticks(range(len(algos)), [label(a) for a in algos] if j == 0 else [])
        ax.set_title(AGGREGATE_TITLES.get(aggregate, aggregate))
    fig.supxlabel(score_label)  # once for the row: every panel's axis is the same score
    # what a bar and a tick are, said on the figure (rliable's intervals: stratified bootstrap over runs)
    fig.legend([Patch(color="grey", alpha=0.75), Line2D([], [], color="black")],
               ["95% stratified-bootstrap CI", "point estimate"], loc="outside upper center", ncols=2,
               fontsize="small")
    return fig


def performance_profile_plot(profiles: pd.DataFrame, score_label: str = "human normalized score") -> Figure:
    """Agarwal et al. 2021 performance profile (from stats.performance_profiles): fraction of runs scoring
    above tau, one labelled line per algorithm with its 95% CI band."""
    _require(profiles, "performance profiles")
    algos = sorted(profiles["algo"].unique())
    colors = _palette(algos)
    fig, axes = _figure(1, 1)
    ax = axes[0, 0]
    for algo in algos:
        rows = profiles[profiles["algo"] == algo]
        summary = pd.DataFrame({"x": rows["tau"], "median": rows["fraction"], "low": rows["ci_low"],
                                "high": rows["ci_high"]})
        _draw_band(ax, summary, label(algo), colors[algo])
    ax.set_xlabel(textwrap.fill(f"{score_label} (tau)", 40))  # one panel wide: long labels wrap
    ax.set_ylabel("fraction of runs above tau")
    ax.legend(fontsize="small", title="95% stratified-bootstrap CI", title_fontsize="small")
    return fig


def save_figure(fig: Figure, path_without_ext: str | Path) -> tuple[Path, Path]:
    """Write ``<path>.png`` and ``<path>.pdf``, each atomically; returns both paths.

    The PDF's creation date is left out so that re-rendering unchanged results gives an unchanged file.
    """
    base = Path(path_without_ext)
    png = tidy.atomic_write(f"{base}.png", lambda tmp: fig.savefig(tmp, format="png", dpi=150))
    pdf = tidy.atomic_write(f"{base}.pdf",
                            lambda tmp: fig.savefig(tmp, format="pdf", metadata={"CreationDate": None}))
    return png, pdf
