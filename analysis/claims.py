"""Replication claims as data, and their verdicts (DESIGN.md, Replication claims).

A claim names its source, the statement, the metric and how each run is scored, a comparison, and a
threshold per scale. Comparisons (``better`` orients each so that larger means "as claimed"):

- ``prob_improvement``: P(a better than b), averaged over tasks (Agarwal et al. 2021); null 0.5
- ``mean_difference``: mean(a) - mean(b) over runs and tasks, in the metric's units; null 0
- ``ratio``: how many times better a is than b (mean(a)/mean(b), or mean(b)/mean(a) when lower is better,
  e.g. episodes needed); null 1
- ``slope``: least-squares slope of a's per-task mean against the task value (optionally log2), e.g. bias
  against the number of actions; null 0
- ``mean``: a's mean alone against the threshold itself (e.g. max |Q - Q*| below a tolerance); no null

Verdicts, with the 95% stratified-bootstrap CI of the estimate:

- reproduced: the estimate is beyond the threshold and the CI excludes the null on the claimed side
  (``mean``: the whole CI is beyond the threshold)
- not reproduced: the CI lies wholly on the wrong side of the null, or wholly short of the threshold (an
  effect, if there is one, smaller than claimed)
- inconclusive: anything else, and every claim whose runs are missing or too few
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis import stats, tidy

CLAIMS_PATH = Path(__file__).resolve().parent / "claims.yaml"
SCALES = ("smoke", "quick", "paper")
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
COMPARISONS = {"prob_improvement": 0.5, "mean_difference": 0.0, "ratio": 1.0, "slope": 0.0, "mean": None}
SCORES = ("final", "last", "best", "episodes_to_within")
# Runs per task below which no verdict is given. smoke: the fewest a bootstrap can resample; quick and paper:
# DESIGN.md's "at least 5 seeds" (CIs are well calibrated from about 10, Agarwal et al. 2021).
MIN_RUNS = {"smoke": 2, "quick": 5, "paper": 5}


@dataclass(frozen=True)
class Claim:
    """One published result, stated so that runs can test it."""

    id: str
    suite: str
    """The suite (DESIGN.md table) whose runs test the claim."""
    source: str
    """Paper and figure or table, e.g. "van Hasselt, Guez, Silver 2016, Fig. 3"."""
    statement: str
    metric: str
    """Tidy metric each run is scored on."""
    comparison: str
    thresholds: Mapping[str, float]
    """Per scale (smoke, quick, paper): the effect the estimate must exceed."""
    a: str
    """The group the claim is about (a value of ``group``)."""
    b: str | None = None
    """The group it is compared with; none for ``mean`` and ``slope``."""
    better: str = "higher"
    """Direction of ``metric`` that the claim calls better: higher or lower."""
    score: str = "final"
    """Per-run score: final (mean over the last ``last_fraction`` of steps), last (last observation), best,
    episodes_to_within (episodes to come within 5% of the run's best; Gu et al. 2016, Table 1)."""
    minus: str | None = None
    """A metric subtracted from ``metric`` per run (overestimation: q_estimate minus true_value)."""
    last_fraction: float = tidy.FINAL_FRACTION
    group: str = "algo"
    task: str = "env"
    """Column whose values are the tasks; for ``slope``, the x (e.g. num_actions, replay_size)."""
    log_x: bool = False
    """``slope`` against log2 of the task value."""
    where: Mapping[str, Any] = field(default_factory=dict)
    """Row filters: column -> value, or list of values."""
    human_table: str | None = None
    """Human-normalize scores with this table (reference.human_random_scores)."""
    figure: str | None = None
    """Path of the figure that shows the claim, relative to results/<scale>/ (without extension)."""

    def __post_init__(self):
        def invalid(key, value, valid):
            return ValueError(f"claim {self.id!r}: {key} {value!r} is not valid; valid: {', '.join(valid)}")

        if self.comparison not in COMPARISONS:
            raise invalid("comparison", self.comparison, COMPARISONS)
        if self.better not in ("higher", "lower"):
            raise invalid("better", self.better, ("higher", "lower"))
        if self.score not in SCORES:
            raise invalid("score", self.score, SCORES)
        if sorted(self.thresholds) != sorted(SCALES):
            raise ValueError(f"claim {self.id!r}: thresholds needs one per scale: {', '.join(SCALES)}")
        two_groups = self.comparison in ("prob_improvement", "mean_difference", "ratio")
        if two_groups != (self.b is not None):
            raise ValueError(f"claim {self.id!r}: {self.comparison} needs "
                             + ("a and b" if two_groups else "a alone (no b)"))


@dataclass(frozen=True)
class Verdict:
    claim_id: str
    scale: str
    verdict: str
    reason: str
    estimate: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    threshold: float = float("nan")
    n_runs: int = 0
    """Runs that entered the estimate (all groups, all tasks)."""
    runs: str = ""
    """Runs per group, e.g. "dqn: 5 runs x 3 tasks; double_dqn: 5 runs x 3 tasks"."""


def load_claims(path: str | Path = CLAIMS_PATH) -> list[Claim]:
    """Claims from a YAML file: a top-level list ``claims`` of mappings with the fields of ``Claim``."""
    entries = yaml.safe_load(Path(path).read_text())["claims"]
    names = {f.name for f in dataclasses.fields(Claim)}
    claims = []
    for entry in entries:
        unknown = sorted(set(entry) - names)
        if unknown:
            valid = ", ".join(sorted(names))
            raise ValueError(f"claim {entry.get('id')!r}: unknown keys {unknown}; valid: {valid}")
        claims.append(Claim(**entry))
    ids = [c.id for c in claims]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"duplicate claim ids {duplicated} in {path}")
    return claims


def _select(claim: Claim, df: pd.DataFrame) -> pd.DataFrame:
    rows = df[df["suite"] == claim.suite]
    for column, value in claim.where.items():
        values = value if isinstance(value, list) else [value]
        rows = rows[rows[column].isin(values)]
    groups = [claim.a] if claim.b is None else [claim.a, claim.b]
    return rows[rows[claim.group].isin(groups)]


def run_scores(claim: Claim, rows: pd.DataFrame) -> pd.DataFrame:
    """One score per run (columns ``group``, ``task``, seed, env, score), as the claim defines it."""
    keys = list(dict.fromkeys([claim.group, claim.task, "seed", "env"]))
    if claim.score in ("best", "episodes_to_within"):
        best = tidy.best_scores(rows, claim.metric, keys=keys)
        scores = best.assign(score=best[claim.score])
    else:
        window = {"last_n_evals": 1} if claim.score == "last" else {"last_fraction": claim.last_fraction}
        scores = tidy.final_scores(rows, claim.metric, keys=keys, **window)
        if claim.minus is not None:
            subtracted = tidy.final_scores(rows, claim.minus, keys=keys, **window)
            scores = scores.merge(subtracted[[*keys, "score"]], on=keys, suffixes=("", "_minus"))
            scores["score"] = scores["score"] - scores.pop("score_minus")
    if claim.human_table is not None:
        scores = tidy.human_normalized(scores, claim.human_table)
    return scores


def _statistic(claim: Claim, tasks: list):
    """The comparison's statistic of resampled score matrices, oriented so that larger means "as claimed"
    (``mean`` is not oriented: it is judged against its threshold in the claimed direction)."""
    sign = 1.0 if claim.better == "higher" else -1.0
    if claim.comparison == "mean_difference":
        return lambda x, y: sign * (np.mean(x) - np.mean(y))
    if claim.comparison == "ratio":
        return (lambda x, y: np.mean(x) / np.mean(y)) if sign > 0 else (lambda x, y: np.mean(y) / np.mean(x))
    if claim.comparison == "slope":
        x = np.log2(np.asarray(tasks, float)) if claim.log_x else np.asarray(tasks, float)
        return lambda s: sign * np.polyfit(x, s.mean(axis=0), 1)[0]
    return np.mean


def _estimate(claim: Claim, matrices: dict[str, np.ndarray], tasks: list, reps: int | None,
              base_seed: int) -> tuple[float, float, float]:
    if claim.comparison == "prob_improvement":
        sign = 1.0 if claim.better == "higher" else -1.0
        return stats.probability_of_improvement(sign * matrices[claim.a], sign * matrices[claim.b], name=claim.id,
                                                reps=reps or stats.IMPROVEMENT_REPS, base_seed=base_seed)
    samples = matrices[claim.a] if claim.b is None else (matrices[claim.a], matrices[claim.b])
    point, interval = stats.bootstrap_interval(claim.id, samples, _statistic(claim, tasks),
                                               reps=reps or stats.AGGREGATE_REPS, base_seed=base_seed)
    low, high = interval.ravel()
    return float(point), float(low), float(high)


def judge(claim: Claim, estimate: float, low: float, high: float, threshold: float) -> tuple[str, str]:
    """Verdict and reason for an estimate and its CI (module docstring gives the rules)."""
    null = COMPARISONS[claim.comparison]
    if claim.comparison == "mean":
        beyond = (low > threshold) if claim.better == "higher" else (high < threshold)
        short = (high < threshold) if claim.better == "higher" else (low > threshold)
        side = ">" if claim.better == "higher" else "<"
        if beyond:
            return REPRODUCED, f"95% CI lies wholly {side} {threshold:g}"
        if short:
            return NOT_REPRODUCED, f"95% CI lies wholly on the other side of {threshold:g}"
        return INCONCLUSIVE, f"95% CI contains {threshold:g}"
    if estimate > threshold and low > null:
        return REPRODUCED, f"estimate > {threshold:g} and 95% CI excludes {null:g}"
    if high < null:
        return NOT_REPRODUCED, f"95% CI lies wholly below {null:g}: the opposite of the claim"
    if high < threshold:
        return NOT_REPRODUCED, f"95% CI lies wholly below {threshold:g}: a smaller effect than claimed"
    return INCONCLUSIVE, f"95% CI [{low:.3g}, {high:.3g}] does not settle estimate > {threshold:g}"


def evaluate(claim: Claim, df: pd.DataFrame, scale: str, *, reps: int | None = None,
             base_seed: int = 0) -> Verdict:
    """The claim's verdict on the tidy table ``df`` at ``scale``; missing or too few runs -> inconclusive.

    ``reps`` defaults to rliable's: 2,000 for probability of improvement, 50,000 otherwise.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    threshold = float(claim.thresholds[scale])

    def inconclusive(reason: str, **numbers) -> Verdict:
        return Verdict(claim.id, scale, INCONCLUSIVE, reason, threshold=threshold, **numbers)

    needed = [c for c in (claim.group, claim.task, *claim.where) if c not in df.columns]
    if needed:
        return inconclusive(f"no runs: the table has no column {needed}")
    rows = _select(claim, df)
    if rows.empty:
        return inconclusive("no runs")
    scores = run_scores(claim, rows)
    groups = [claim.a] if claim.b is None else [claim.a, claim.b]
    missing = [g for g in groups if g not in set(scores[claim.group])]
    if missing:
        return inconclusive(f"no runs of {', '.join(missing)}")
    tasks = sorted(scores[claim.task].unique())
    try:
        matrices = tidy.score_matrix(scores, group=claim.group, task=claim.task, tasks=tasks)
    except ValueError as error:
        return inconclusive(str(error))
    n_runs = sum(m.size for m in matrices.values())
    runs = "; ".join(f"{g}: {m.shape[0]} runs x {m.shape[1]} tasks" for g, m in matrices.items())
    fewest = min(m.shape[0] for m in matrices.values())
    if fewest < MIN_RUNS[scale]:
        return inconclusive(f"{fewest} runs per task, {scale} needs {MIN_RUNS[scale]}", n_runs=n_runs,
                            runs=runs)
    if claim.comparison == "slope" and len(tasks) < 3:
        return inconclusive(f"a slope needs 3 or more {claim.task} values, got {len(tasks)}", n_runs=n_runs,
                            runs=runs)
    estimate, low, high = _estimate(claim, matrices, tasks, reps, base_seed)
    verdict, reason = judge(claim, estimate, low, high, threshold)
    return Verdict(claim.id, scale, verdict, reason, estimate, low, high, threshold, n_runs, runs)


def evaluate_all(claims: Sequence[Claim], df: pd.DataFrame, scale: str, *, reps: int | None = None,
                 base_seed: int = 0) -> pd.DataFrame:
    """One row per claim: the Verdict's fields beside the claim's source, statement, comparison and figure."""
    rows = []
    for claim in claims:
        verdict = evaluate(claim, df, scale, reps=reps, base_seed=base_seed)
        rows.append({**dataclasses.asdict(verdict), "suite": claim.suite, "source": claim.source,
                     "statement": claim.statement, "comparison": claim.comparison, "a": claim.a,
                     "b": claim.b or "", "figure": claim.figure or ""})
    return pd.DataFrame(rows)
