"""Run folders -> one tidy table -> per-run scores -> rliable score matrices.

The tidy schema is the run contract's (DESIGN.md, The run contract): one row per observation with
``METRIC_COLUMNS``; ``load_runs`` adds ``status`` from each run.json. Everything here is a pure function of
its inputs except the readers and ``write_table``/``atomic_write``, which only touch the paths they are given.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import reference
from experiments.contract import COLUMNS as METRIC_COLUMNS
from experiments.contract import atomic_write

# A member of a run is one seed of one algorithm on one environment (DESIGN.md, The member axis).
RUN_KEYS = ("algo", "env", "seed")
# Diverged runs count: dropping them would report the runs that happened to stay stable, biasing every
# estimate upward. Failed runs are infrastructure failures (crash, pre-emption) and say nothing about the
# algorithm.
SCORED_STATUSES = ("complete", "diverged")
# Ours: a run's final score is its mean evaluation over the last 10% of its agent steps, which smooths the
# evaluation noise of a single point without reaching back into early training.
FINAL_FRACTION = 0.1

# run_info column -> dotted path into run.json as experiments/cli.py writes it (DESIGN.md, The run contract).
RUN_JSON_FIELDS = {
    "run_id": "run_id",
    "suite": "config.run.suite",
    "status": "status",
    "wall_time_s": "wall_time_s",
    "cpu_time_s": "cpu_time_s",
    "peak_memory_mb": "peak_memory_mb",
    "config_hash": "config_hash",
    "git_commit": "git.commit",
    "device": "device.device",
}
# The run_info columns that measure the machine a run used (time, memory), not what the run computed: the
# same run on another machine or executor differs in these only (experiments/slurm/compare_results.py).
MACHINE_FIELDS = ("wall_time_s", "cpu_time_s", "peak_memory_mb")


def read_run_json(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; every run folder has one (DESIGN.md, The run contract)")
    return json.loads(path.read_text())


def _lookup(info: dict, dotted_key: str):
    value = info
    for part in dotted_key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"run.json has no key {dotted_key!r}")
        value = value[part]
    return value


def load_run(run_dir: str | Path, config_keys: Sequence[str] = ()) -> pd.DataFrame:
    """One run folder's metrics (metrics.parquet or metrics.csv) with ``status`` and the named config values.

    ``config_keys`` are dotted paths into run.json's ``config`` (e.g. ``algo_config.replay_size``); each
    becomes a column named by its last part (``replay_size``), which is how sensitivity sweeps get their
    hyperparameter onto every row.
    """
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    parquet, csv = run_dir / "metrics.parquet", run_dir / "metrics.csv"
    df = pd.read_parquet(parquet) if parquet.exists() else pd.read_csv(csv)
    missing = [c for c in METRIC_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{run_dir}: metrics lack columns {missing}; expected {list(METRIC_COLUMNS)}")
    df = df[list(METRIC_COLUMNS)].copy()
    df["status"] = info["status"]
    for key in config_keys:
        df[key.split(".")[-1]] = _lookup(info, f"config.{key}")
    return df


def load_runs(run_dirs: Iterable[str | Path], config_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Concatenate ``load_run`` over many run folders, in the order given (callers sort for determinism)."""
    frames = [load_run(d, config_keys) for d in run_dirs]
    if not frames:
        return pd.DataFrame(columns=[*METRIC_COLUMNS, "status", *(k.split(".")[-1] for k in config_keys)])
    return pd.concat(frames, ignore_index=True)


def run_info(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run folder: run_dir and the ``RUN_JSON_FIELDS`` columns (None where run.json lacks one).

    A failed run still has a run.json with its wall time, so compute spent counts it too.
    """
    rows = []
    for run_dir in run_dirs:
        info = read_run_json(run_dir)
        row = {"run_dir": str(run_dir)}
        for column, key in RUN_JSON_FIELDS.items():
            try:
                row[column] = _lookup(info, key)
            except KeyError:
                row[column] = None
        rows.append(row)
    return pd.DataFrame(rows, columns=["run_dir", *RUN_JSON_FIELDS])


def write_table(df: pd.DataFrame, path_without_ext: str | Path) -> tuple[Path, Path]:
    """Write ``df`` as ``<path>.csv`` and ``<path>.parquet``, each atomically; returns both paths."""
    base = Path(path_without_ext)
    csv = atomic_write(f"{base}.csv", lambda tmp: df.to_csv(tmp, index=False))
    parquet = atomic_write(f"{base}.parquet", lambda tmp: df.to_parquet(tmp, index=False))
    return csv, parquet


def _metric_rows(df: pd.DataFrame, metric: str, statuses: Sequence[str] | None) -> pd.DataFrame:
    rows = df[df["metric"] == metric]
    if statuses is not None and "status" in rows.columns:
        rows = rows[rows["status"].isin(statuses)]
    return rows.sort_values("step", kind="stable")


def _budget(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Frames and agent steps side by side: DESIGN.md asks every table to show both.
    return rows.groupby(keys, sort=True).agg(step=("step", "max"), frames=("frames", "max"),
                                             protocol=("protocol", "first"))


def stopped_members(df: pd.DataFrame, keys: Sequence[str] = RUN_KEYS) -> set[tuple]:
    """The members (``keys`` tuples) the runner stopped: a ``diverged`` row with a value > 0 (a non-finite loss
    or metric; experiments/runner.py logs no row of the member after it). Their scores here are computed from
    the rows they logged before, so a final score is the mean over the last part of their own steps."""
    flagged = df[(df["metric"] == "diverged") & (df["value"] > 0)]
    return set(flagged[list(keys)].itertuples(index=False, name=None))


def final_scores(df: pd.DataFrame, metric: str = "eval_return", *, last_fraction: float | None = None,
                 last_n_evals: int | None = None, keys: Sequence[str] = RUN_KEYS,
                 statuses: Sequence[str] | None = SCORED_STATUSES) -> pd.DataFrame:
    """Per-run final score: the mean of ``metric`` over the last ``last_n_evals`` observations, or over the
    observations in the last ``last_fraction`` of the run's steps (give exactly one).

    Returns one row per ``keys`` with score, n_obs (observations averaged), step and frames (the run's budget
    so far) and protocol.
    """
    if (last_fraction is None) == (last_n_evals is None):
        raise ValueError("give exactly one of last_fraction, last_n_evals")
    keys = list(keys)
    rows = _metric_rows(df, metric, statuses)
    groups = rows.groupby(keys, sort=True)
    if last_n_evals is not None:
        if last_n_evals < 1:
            raise ValueError(f"last_n_evals must be >= 1, got {last_n_evals}")
        chosen = rows[groups["step"].rank(method="first", ascending=False) <= last_n_evals]
    else:
        if not 0 < last_fraction <= 1:
            raise ValueError(f"last_fraction must be in (0, 1], got {last_fraction}")
        chosen = rows[rows["step"] >= (1 - last_fraction) * groups["step"].transform("max")]
    scores = chosen.groupby(keys, sort=True).agg(score=("value", "mean"), n_obs=("value", "size"))
    return scores.join(_budget(rows, keys)).reset_index()


def best_scores(df: pd.DataFrame, metric: str = "eval_return", *, within: float = 0.05,
                keys: Sequence[str] = RUN_KEYS,
                statuses: Sequence[str] | None = SCORED_STATUSES) -> pd.DataFrame:
    """Per-run best score and the episodes (and agent steps) it took to first come within ``within`` of it.

    Gu et al. 2016, Table 1: "best test reward ... and the number of episodes required to reach within 5% of
    the best value". Rewards there are often negative, so "within 5%" is read as
    value >= best - 0.05 * |best|.
    """
    keys = list(keys)
    rows = _metric_rows(df, metric, statuses)
    best = rows.groupby(keys, sort=True)["value"].transform("max")
    reached = rows[rows["value"] >= best - within * best.abs()]
    first = reached.groupby(keys, sort=True).first()
    out = pd.DataFrame({
        "best": rows.groupby(keys, sort=True)["value"].max(),
        "episodes_to_within": first["episodes"],
        "steps_to_within": first["step"],
    })
    return out.join(_budget(rows, keys)).reset_index()


def episodes_to_target(df: pd.DataFrame, metric: str, targets: dict[str, float], *,
                       keys: Sequence[str] = RUN_KEYS,
                       statuses: Sequence[str] | None = SCORED_STATUSES) -> pd.DataFrame:
    """Per run: the episodes (and agent steps) until ``metric`` first reaches its task's fixed target
    (``targets``: env -> return), columns score (episodes), steps_to_target, reached.

    A run that never reaches its target is censored: it scores the episodes it ran in all (a lower bound on
    what it needs) with reached False, so it can never look more data-efficient than a run that got there.
    """
    keys = list(keys)
    rows = _metric_rows(df, metric, statuses)
    unknown = sorted(set(rows["env"]) - set(targets))
    if unknown:
        raise ValueError(f"no return target for {unknown}; targets: {sorted(targets)}")
    hit = rows[rows["value"] >= rows["env"].map(targets)]
    first = hit.groupby(keys, sort=True).first()
    groups = rows.groupby(keys, sort=True)
    out = pd.DataFrame({"last_episodes": groups["episodes"].max()})
    out["reached"] = out.index.isin(first.index)
    out["score"] = first["episodes"].reindex(out.index).fillna(out["last_episodes"]).astype(float)
    out["steps_to_target"] = first["step"].reindex(out.index)
    return out.join(_budget(rows, keys)).reset_index()


# Ours: a member whose value estimate exceeds twice the largest possible |Q| has diverged; the largest possible
# |Q| is r_max / (1 - gamma), the return of the best reward forever. Twice, so that a finite-sample estimate
# that overshoots in early training is not counted; 1e8 on CartPole (bound 100) is.
Q_BOUND_MARGIN = 2.0


def q_bound(env: str, gamma: float, clip_rewards: bool = False, margin: float = Q_BOUND_MARGIN,
            configured: dict[str, float] | None = None) -> tuple[float, str]:
    """The |Q| bound a member must stay within, and where it comes from: a configured bound for the task
    (tasks with unbounded rewards), else margin x r_max / (1 - gamma) with r_max 1 for clipped rewards or
    reference.REWARD_BOUNDS; (nan, reason) where no bound is known."""
    if configured and env in configured:
        return float(configured[env]), "configured"
    r_max = 1.0 if clip_rewards else reference.REWARD_BOUNDS.get(env)
    if r_max is None or not 0 <= gamma < 1:
        return float("nan"), "no bound: rewards unbounded and none configured"
    return margin * r_max / (1 - gamma), f"{margin:g} x r_max {r_max:.4g} / (1 - gamma {gamma:g})"


def diverged_members(df: pd.DataFrame, run_config: pd.DataFrame, *, metric: str = "q_estimate",
                     margin: float = Q_BOUND_MARGIN, configured: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per member (run_id, seed) with ``metric`` rows: the largest |Q estimate| it logged, its bound
    (``q_bound``), and whether it diverged: by magnitude (above the bound or non-finite), or by the runner's
    own per-member ``diverged`` metric (any value > 0) where the runs log one.

    ``run_config``: one row per run_id with gamma and clip_rewards (collect.py's provenance columns).
    """
    columns = ["run_id", "suite", "algo", "env", "seed", "max_abs_q", "bound", "bound_source",
               "diverged_by_magnitude", "diverged_flag", "diverged"]
    estimates = df[df["metric"] == metric]
    if estimates.empty:
        return pd.DataFrame(columns=columns)
    keys = ["run_id", "suite", "algo", "env", "seed"]
    values = estimates["value"].astype(float)
    members = estimates.assign(abs_q=values.abs().where(np.isfinite(values), np.inf)).groupby(keys, sort=True)
    out = members["abs_q"].max().rename("max_abs_q").reset_index()
    config = run_config.set_index("run_id")
    bounds = [q_bound(env, float(config.loc[run, "gamma"]), bool(config.loc[run, "clip_rewards"]), margin,
                      configured) if run in config.index else (float("nan"), "no run config")
              for run, env in zip(out["run_id"], out["env"], strict=True)]
    out["bound"] = [b for b, _ in bounds]
    out["bound_source"] = [s for _, s in bounds]
    out["diverged_by_magnitude"] = out["max_abs_q"] > out["bound"]
    stopped = stopped_members(df, keys)
    out["diverged_flag"] = [member in stopped for member in out[keys].itertuples(index=False, name=None)]
    out["diverged"] = out["diverged_by_magnitude"] | out["diverged_flag"]
    return out[columns]


def score_matrix(scores: pd.DataFrame, *, score: str = "score", group: str = "algo", task: str = "env",
                 run: str = "seed", tasks: Sequence | None = None) -> dict[str, np.ndarray]:
    """Per-run scores -> {group: array [runs, tasks]}, the input rliable expects (Agarwal et al. 2021).

    Groups come out sorted by name and tasks in sorted order (or ``tasks``), so the matrices do not depend on
    row order. Within a group every task must have the same number of runs: rliable's stratified bootstrap
    resamples runs within each task of a rectangular matrix.
    """
    tasks = sorted(scores[task].unique()) if tasks is None else list(tasks)
    matrices = {}
    for name, rows in scores.groupby(group, sort=True):
        columns = []
        for t in tasks:
            values = rows[rows[task] == t].sort_values(run)[score].to_numpy(dtype=float)
            if len(values) == 0:
                raise ValueError(f"{group}={name!r} has no runs on {task}={t!r}")
            columns.append(values)
        counts = {t: len(c) for t, c in zip(tasks, columns, strict=True)}
        if len(set(counts.values())) != 1:
            raise ValueError(f"{group}={name!r} has unequal runs per {task}: {counts}")
        matrix = np.stack(columns, axis=1)
        if np.isnan(matrix).any():
            raise ValueError(f"{group}={name!r} has NaN scores; a diverged run must log finite values")
        matrices[str(name)] = matrix
    return matrices


def human_normalized(scores: pd.DataFrame, table: str = reference.DQN_ZOO, *, score: str = "score",
                     env: str = "env") -> pd.DataFrame:
    """Replace ``score`` by (score - random) / (human - random) from the named human table.

    Keeps the raw score as ``raw_score`` and records the table in ``human_table``, because the two published
    human tables differ (reference.human_random_scores).
    """
    ref = reference.human_random_scores(table).set_index("game")
    other = sorted(e for e in scores[env].unique() if not reference.is_atari(e))
    if other:
        raise ValueError(f"environments {other} are not Atari games; human-normalized scores need ALE ids")
    games = scores[env].map(reference.atari_game_key)
    unknown = sorted(set(games) - set(ref.index))
    if unknown:
        raise ValueError(f"games {unknown} are not in human table {table!r}")
    out = scores.copy()
    out["raw_score"] = out[score]
    random, human = games.map(ref["random"]), games.map(ref["human"])
    out[score] = (out[score] - random) / (human - random)
    out["human_table"] = table
    return out


def normalized(scores: pd.DataFrame, table: str, *, score: str = "score", env: str = "env") -> pd.DataFrame:
    """Replace ``score`` by its normalized value under ``table`` (reference.NORMALIZATIONS): Atari games between
    random and human (``human_normalized``), MinAtar v0 games between a random policy and Young & Tian's DQN at
    5M frames (reference.minatar_normalization). Keeps ``raw_score``; names the table in ``normalization``."""
    if table in (reference.DQN_ZOO, reference.MNIH2015):
        return human_normalized(scores, table, score=score, env=env).assign(normalization=table)
    if table != reference.MINATAR_DQN5M:
        raise ValueError(f"unknown normalization {table!r}; valid: {', '.join(reference.NORMALIZATIONS)}")
    ref = reference.minatar_normalization().set_index("env")
    unknown = sorted(set(scores[env]) - set(ref.index))
    if unknown:
        raise ValueError(f"environments {unknown} have no {table} normalization; valid: {', '.join(ref.index)}")
    out = scores.copy()
    out["raw_score"] = out[score]
    random, top = out[env].map(ref["random"]), out[env].map(ref["reference"])
    out[score] = (out[score] - random) / (top - random)
    out["normalization"] = table
    return out
