"""Replication claims as data, and their verdicts (DESIGN.md, Replication claims).

A claim names its source, the statement, the metric and how each run is scored, a comparison, and where the
claim is judged per task or per family of tasks. Comparisons (``better`` orients each so that larger means
"as claimed"):

- ``prob_improvement``: P(a better than b) per task (Mann-Whitney), averaged over the scope's tasks
  (Agarwal et al. 2021); null 0.5
- ``mean_difference``: mean(a) - mean(b) over runs and tasks, in the metric's units; null 0
- ``ratio``: how many times better a is than b (mean(a)/mean(b), or mean(b)/mean(a) when lower is better,
  e.g. episodes needed); null 1
- ``slope``: least-squares slope of a's per-task mean against the task value (optionally log2), e.g. bias
  against the number of actions; null 0
- ``mean``: a's mean alone against a tolerance (``thresholds``, per scale), which is its null

Verdicts, with the 95% stratified-bootstrap percentile CI of the estimate (rliable), symmetric about the null:

- reproduced: the CI excludes the null on the claimed side
- contradicted: the CI excludes the null on the opposite side
- inconclusive: the CI contains the null, or there are runs but too few to judge
- not run: no runs to judge (the suite did not run at this scale, or a side of the comparison has none); not
  evidence either way, and never counted as inconclusive

Beside each verdict: the published effect on the same statistic (``published``, where the source gives one)
and whether ours is smaller (CI wholly below it), larger or consistent; the runs per group; and the smallest
effect that this rule, with these many runs per group and task, reproduces with 80% probability (a
simulation of the same rule, ``detectable_effect``).

A claim selects exactly the runs it names: its ``suite``, ``where`` filters and ``a``/``b`` values of
``group`` must leave one run per seed and task, or the claim is an error (a sweep's runs are never averaged
into its baseline). ``split_by`` judges a claim once per value of a column (per task, per noise model) and
``families`` once per family of tasks, never pooled across them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis import reference, stats, tidy

CLAIMS_PATH = Path(__file__).resolve().parent / "claims.yaml"
SCALES = ("smoke", "quick", "paper")
REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN = "reproduced", "contradicted", "inconclusive", "not run"
COMPARISONS = {"prob_improvement": 0.5, "mean_difference": 0.0, "ratio": 1.0, "slope": 0.0, "mean": None}
SCORES = ("final", "last", "best", "episodes_to_within", "episodes_to_target")
# Where an episodes_to_target score gets its target: gymnasium's registered reward_threshold per task
# (reference.GYMNASIUM_RETURN_TARGETS), or within 5% of the best return any method reaches on the task (the
# highest over methods of the median over runs of each run's best; Gu et al. 2016's "within 5%", measured
# against every method instead of each run's own best, so a run that plateaus low never counts as fast).
TARGETS = ("gymnasium", "best_across_methods")
TARGET_WITHIN = 0.05
# Runs per task below which no verdict is given. smoke: the fewest a bootstrap can resample; quick and paper:
# DESIGN.md's "at least 5 seeds" (CIs are well calibrated from about 10, Agarwal et al. 2021).
MIN_RUNS = {"smoke": 2, "quick": 5, "paper": 5}
# Units a published budget is stated in (Claim.published_budget): the tidy columns step, frames, episodes.
BUDGET_UNITS = {"agent_steps": "step", "frames": "frames", "episodes": "episodes"}
# Power of the detectable effect (ours: the conventional 80%), and the simulation's size: 200 simulated
# experiments of 400 bootstrap replications each put the power estimate within about +-0.03 (ours).
POWER = 0.8
POWER_SIMS = 200
POWER_REPS = 400
# The largest shift searched, in within-task standard deviations: beyond it an effect counts as undetectable.
POWER_MAX_SHIFT = 8.0


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
    a: str
    """The group the claim is about (a value of ``group``)."""
    b: str | None = None
    """The group it is compared with; none for ``mean`` and ``slope``."""
    thresholds: Mapping[str, float] = field(default_factory=dict)
    """``mean`` only, one per scale (smoke, quick, paper): the tolerance the mean must be beyond; its null."""
    published: float | None = None
    """The source's own effect on the claim's statistic, in its oriented units (e.g. a ratio of 1.6)."""
    published_note: str = ""
    """Where ``published`` comes from and how it was read off the source."""
    better: str = "higher"
    """Direction of ``metric`` that the claim calls better: higher or lower."""
    score: str = "final"
    """Per-run score: final (mean over the last ``last_fraction`` of steps), last (last observation), best,
    episodes_to_within (episodes to come within 5% of the run's own best; Gu et al. 2016, Table 1),
    episodes_to_target (episodes to first reach the task's ``target`` return)."""
    target: str | None = None
    """episodes_to_target only: where the return target comes from, one of ``TARGETS``."""
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
    split_by: str | None = None
    """Judge the claim once per value of this column (e.g. env: one verdict per noise model or MDP)."""
    families: Mapping[str, Sequence] = field(default_factory=dict)
    """Judge the claim once per family of ``task`` values (e.g. precision vs locomotion tasks)."""
    human_table: str | None = None
    """Human-normalize scores with this table (reference.human_random_scores)."""
    figure: str | None = None
    """Path of the figure that shows the claim, relative to results/<scale>/ (without extension)."""
    published_budget: Mapping[str, Any] = field(default_factory=dict)
    """The source's training budget per run: ``note`` (text, with its source) and, where the source states one
    number, ``amount`` in ``unit`` (one of ``BUDGET_UNITS``) so the report can say what fraction of it ours is."""

    counterpart: str | None = None
    """The id of another claim that tests the same published result on a cheaper testbed (MinAtar for an Atari
    claim); the report prints its verdicts in this claim's section, so that a claim not run at a scale points to
    the evidence that is. Its comparison may differ (e.g. another baseline): the report names both."""

    def __post_init__(self):
        def invalid(key, value, valid):
            return ValueError(f"claim {self.id!r}: {key} {value!r} is not valid; valid: {', '.join(valid)}")

        if self.comparison not in COMPARISONS:
            raise invalid("comparison", self.comparison, COMPARISONS)
        if self.better not in ("higher", "lower"):
            raise invalid("better", self.better, ("higher", "lower"))
        if self.score not in SCORES:
            raise invalid("score", self.score, SCORES)
        two_groups = self.comparison in ("prob_improvement", "mean_difference", "ratio")
        if two_groups != (self.b is not None):
            raise ValueError(f"claim {self.id!r}: {self.comparison} needs "
                             + ("a and b" if two_groups else "a alone (no b)"))
        if (self.score == "episodes_to_target") != (self.target is not None):
            raise ValueError(f"claim {self.id!r}: target is needed with score episodes_to_target and only there")
        if self.target is not None and self.target not in TARGETS:
            raise invalid("target", self.target, TARGETS)
        if self.comparison == "mean" and sorted(self.thresholds) != sorted(SCALES):
            raise ValueError(f"claim {self.id!r}: mean needs thresholds (its tolerance), one per scale: "
                             f"{', '.join(SCALES)}")
        budget = dict(self.published_budget)
        unknown = sorted(set(budget) - {"note", "amount", "unit"})
        if unknown:
            raise ValueError(f"claim {self.id!r}: published_budget has unknown keys {unknown}; valid: amount, note, "
                             "unit")
        if budget and not budget.get("note"):
            raise ValueError(f"claim {self.id!r}: published_budget needs a note naming its source")
        if ("amount" in budget) != ("unit" in budget):
            raise ValueError(f"claim {self.id!r}: published_budget needs amount and unit together")
        if "unit" in budget and budget["unit"] not in BUDGET_UNITS:
            raise invalid("published_budget unit", budget["unit"], BUDGET_UNITS)
        if "amount" in budget and not (isinstance(budget["amount"], int | float) and budget["amount"] > 0):
            raise ValueError(f"claim {self.id!r}: published_budget amount must be a positive number, got "
                             f"{budget['amount']!r}")
        if self.comparison != "mean" and self.thresholds:
            raise ValueError(f"claim {self.id!r}: thresholds are the tolerance of a mean claim; a "
                             f"{self.comparison} is judged against its null {COMPARISONS[self.comparison]:g} "
                             "(give the source's effect as published)")


@dataclass(frozen=True)
class Verdict:
    claim_id: str
    scale: str
    verdict: str
    reason: str
    scope: str = "all"
    """The tasks judged: "all", "env=<value>" (split_by) or "<family>: <tasks>"."""
    estimate: float = float("nan")
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    null: float = float("nan")
    """The value the CI must exclude (``mean``: the scale's tolerance)."""
    published: float = float("nan")
    versus_published: str = ""
    """ours smaller (CI wholly below the published effect), ours larger, or consistent."""
    detectable: float = float("nan")
    """The smallest effect (on the claim's statistic) reproduced with 80% probability at these run counts."""
    n_runs: int = 0
    """Runs that entered the estimate (all groups, all tasks)."""
    runs: str = ""
    """Runs per group, e.g. "dqn: 5 runs x 3 tasks; double_dqn: 5 runs x 3 tasks"."""
    aggregation: str = ""
    """How the estimate combines runs and tasks."""
    budget: str = ""
    """The training budget of the runs judged, per run (``run_budget``)."""
    budget_fraction: float = float("nan")
    """Ours divided by the published budget in its unit (median over the runs judged); NaN where the source
    states no single number."""


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
    by_id = {c.id: c for c in claims}
    for claim in claims:
        if claim.counterpart is None:
            continue
        other = by_id.get(claim.counterpart)
        if other is None:
            raise ValueError(f"claim {claim.id!r}: counterpart {claim.counterpart!r} is not a claim in {path}; "
                             f"valid: {', '.join(sorted(set(ids) - {claim.id}))}")
        if other.suite == claim.suite:
            raise ValueError(f"claim {claim.id!r}: counterpart {other.id!r} is in the same suite "
                             f"({claim.suite}); a counterpart tests the result on another testbed")
    return claims


def _groups(claim: Claim) -> list[str]:
    return [claim.a] if claim.b is None else [claim.a, claim.b]


def _select(claim: Claim, df: pd.DataFrame) -> pd.DataFrame:
    """The suite's rows that pass ``where`` (every group: a best-across-methods target needs them all)."""
    rows = df[df["suite"] == claim.suite]
    for column, value in claim.where.items():
        values = value if isinstance(value, list) else [value]
        rows = rows[rows[column].isin(values)]
    return rows


def return_targets(claim: Claim, rows: pd.DataFrame) -> dict[str, float]:
    """env -> the return an episodes_to_target score must reach (``TARGETS``); rows: every method's."""
    envs = sorted(rows["env"].unique())
    if claim.target == "gymnasium":
        missing = [e for e in envs if reference.return_target(e) is None]
        if missing:
            raise ValueError(f"claim {claim.id!r}: no gymnasium return target for {missing}; use target "
                             "best_across_methods")
        return {e: reference.return_target(e) for e in envs}
    keys = list(dict.fromkeys([claim.group, "env", "seed", "run_id"]))
    best = tidy.best_scores(rows, claim.metric, keys=keys)
    per_method = best.groupby(["env", claim.group])["best"].median().groupby("env").max()
    return {e: float(v - TARGET_WITHIN * abs(v)) for e, v in per_method.items()}


def run_scores(claim: Claim, rows: pd.DataFrame, targets: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One score per run (columns ``group``, ``task``, seed, env, run_id, score), as the claim defines it."""
    keys = list(dict.fromkeys([claim.group, claim.task, "seed", "env", "run_id"]))
    if claim.score == "episodes_to_target":
        scores = tidy.episodes_to_target(rows, claim.metric, targets or {}, keys=keys)
    elif claim.score in ("best", "episodes_to_within"):
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


def _one_run_per_seed(claim: Claim, scores: pd.DataFrame) -> None:
    """A claim names its runs exactly: two runs of one group, task and seed (a baseline and a sweep point of
    the same algorithm) would be averaged into one score, so they are an error in the claim."""
    counts = scores.groupby([claim.group, claim.task, "seed"])["run_id"].nunique()
    many = counts[counts > 1]
    if not many.empty:
        (group, task, _), n = many.index[0], int(many.iloc[0])
        ids = sorted(scores[(scores[claim.group] == group) & (scores[claim.task] == task)]["run_id"].unique())
        raise ValueError(f"claim {claim.id!r} selects {n} runs per seed of {claim.group}={group!r} on "
                         f"{claim.task}={task!r} ({', '.join(map(str, ids))}); name one with where (a swept "
                         "setting or a tag) or group (e.g. ablation)")


def batch_statistic(claim: Claim, tasks: Sequence):
    """The comparison's statistic of score arrays [..., runs, tasks] (any leading batch axes), oriented so
    that larger means "as claimed" (``mean`` is not oriented: it is judged against its tolerance)."""
    sign = 1.0 if claim.better == "higher" else -1.0

    def means(s):
        return s.mean(axis=(-2, -1))

    if claim.comparison == "prob_improvement":
        def improvement(x, y):
            x, y = sign * x, sign * y
            pairs = x[..., :, None, :], y[..., None, :, :]
            per_task = (pairs[0] > pairs[1]).mean(axis=(-3, -2)) + 0.5 * (pairs[0] == pairs[1]).mean(axis=(-3, -2))
            return per_task.mean(axis=-1)

        return improvement
    if claim.comparison == "mean_difference":
        return lambda x, y: sign * (means(x) - means(y))
    if claim.comparison == "ratio":
        return (lambda x, y: means(x) / means(y)) if sign > 0 else (lambda x, y: means(y) / means(x))
    if claim.comparison == "slope":
        x = np.log2(np.asarray(tasks, float)) if claim.log_x else np.asarray(tasks, float)
        centred = x - x.mean()
        return lambda s: sign * (s.mean(axis=-2) * centred).sum(axis=-1) / (centred ** 2).sum()
    return means


def _estimate(claim: Claim, matrices: dict[str, np.ndarray], tasks: list, reps: int | None,
              base_seed: int) -> tuple[float, float, float]:
    if claim.comparison == "prob_improvement":
        sign = 1.0 if claim.better == "higher" else -1.0
        return stats.probability_of_improvement(sign * matrices[claim.a], sign * matrices[claim.b], name=claim.id,
                                                reps=reps or stats.IMPROVEMENT_REPS, base_seed=base_seed)
    samples = matrices[claim.a] if claim.b is None else (matrices[claim.a], matrices[claim.b])
    point, interval = stats.bootstrap_interval(claim.id, samples, batch_statistic(claim, tasks),
                                               reps=reps or stats.AGGREGATE_REPS, base_seed=base_seed)
    low, high = interval.ravel()
    return float(point), float(low), float(high)


def _null(claim: Claim, threshold: float) -> float:
    return threshold if claim.comparison == "mean" else COMPARISONS[claim.comparison]


def _outcome(claim: Claim, low, high, null):
    """Reproduced / contradicted masks (arrays or scalars) of CIs [low, high] against the null."""
    if claim.comparison == "mean" and claim.better == "lower":
        return high < null, low > null
    return low > null, high < null


def judge(claim: Claim, low: float, high: float, threshold: float = math.nan) -> tuple[str, str]:
    """Verdict and reason for a CI (module docstring gives the rules); ``threshold``: a mean claim's tolerance."""
    null = _null(claim, threshold)
    reproduced, contradicted = _outcome(claim, low, high, null)
    claimed = "below" if claim.comparison == "mean" and claim.better == "lower" else "above"
    opposite = "above" if claimed == "below" else "below"
    if reproduced:
        return REPRODUCED, f"95% CI lies wholly {claimed} {null:g}, as claimed"
    if contradicted:
        return CONTRADICTED, f"95% CI lies wholly {opposite} {null:g}: the opposite of the claim"
    return INCONCLUSIVE, f"95% CI [{low:.3g}, {high:.3g}] contains {null:g}"


def versus_published(claim: Claim, low: float, high: float) -> str:
    """Our CI against the published effect: ours smaller, ours larger, or consistent ('' without one)."""
    if claim.published is None:
        return ""
    if high < claim.published:
        return "ours smaller"
    if low > claim.published:
        return "ours larger"
    return "consistent"


def _population(claim: Claim, matrices: dict[str, np.ndarray], tasks: Sequence, shift: float, sd: np.ndarray,
                threshold: float) -> dict[str, np.ndarray]:
    """True per-task means [tasks] of each group for a true effect of ``shift`` within-task SDs in the claimed
    direction: a = b + shift (b at its observed means); a mean ``shift`` SDs beyond the tolerance; a slope of
    ``shift`` mean SDs per unit of x around a's observed mean."""
    direction = 1.0 if claim.better == "higher" else -1.0
    if claim.b is not None:
        b = matrices[claim.b].mean(axis=0)
        return {claim.a: b + direction * shift * sd, claim.b: b}
    a = matrices[claim.a]
    if claim.comparison == "mean":
        return {claim.a: np.full(a.shape[1], threshold) + direction * shift * sd}
    x = np.log2(np.asarray(tasks, float)) if claim.log_x else np.asarray(tasks, float)
    return {claim.a: a.mean() + direction * shift * sd.mean() * (x - x.mean())}


def detectable_effect(claim: Claim, matrices: dict[str, np.ndarray], tasks: Sequence, threshold: float = math.nan,
                      *, power: float = POWER, sims: int = POWER_SIMS, reps: int = POWER_REPS,
                      base_seed: int = 0) -> float:
    """The smallest true effect, on the claim's own statistic, that the verdict rule reproduces with
    probability ``power`` at these runs per group and task (nan if none within ``POWER_MAX_SHIFT`` SDs).

    Simulation of the same rule: each simulated experiment draws normal scores with the observed within-task
    SD (pooled over groups) around true means ``_population`` shifted in the claimed direction, takes the 95%
    stratified-bootstrap percentile CI of the statistic, and counts it reproduced when the CI excludes the
    null as claimed. Common random numbers across shifts keep power monotone, so a bisection finds the shift.
    The effect is the statistic of the true means (prob_improvement: Phi(shift / sqrt 2), equal SDs).
    """
    groups = _groups(claim)
    sd = np.sqrt(np.mean([matrices[g].var(axis=0, ddof=1) for g in groups], axis=0))
    if not np.all(np.isfinite(sd)) or np.all(sd == 0):
        return math.nan
    sd = np.where(sd > 0, sd, sd[sd > 0].min())
    rng = np.random.default_rng(stats.name_seed(f"{claim.id}|power", base_seed))
    noise = {g: rng.standard_normal((sims, *matrices[g].shape)) for g in groups}
    picks = {g: rng.integers(0, matrices[g].shape[0], size=(sims, reps, *matrices[g].shape)) for g in groups}
    statistic = batch_statistic(claim, tasks)
    null = _null(claim, threshold)

    def power_at(shift: float) -> float:
        means = _population(claim, matrices, tasks, shift, sd, threshold)
        boots = [np.take_along_axis((means[g] + sd * noise[g])[:, None], picks[g], axis=-2) for g in groups]
        values = statistic(*boots)
        low, high = np.quantile(values, [0.025, 0.975], axis=-1)
        return float(np.mean(_outcome(claim, low, high, null)[0]))

    if power_at(POWER_MAX_SHIFT) < power:
        return math.nan
    low, high = 0.0, POWER_MAX_SHIFT
    for _ in range(10):
        middle = (low + high) / 2
        low, high = (low, middle) if power_at(middle) >= power else (middle, high)
    if claim.comparison == "prob_improvement":
        return float(0.5 * math.erfc(-high / 2))
    means = _population(claim, matrices, tasks, high, sd, threshold)
    return float(statistic(*(means[g][None, :] for g in groups)))


def run_budget(claim: Claim, rows: pd.DataFrame) -> tuple[str, float]:
    """The budget of the runs in ``rows`` (agent steps, frames where they differ, episodes: each run's last
    logged value, a member per run; median and range over runs) and its fraction of the published budget."""
    keys = [c for c in dict.fromkeys(["run_id", claim.group, claim.task, "seed"]) if c in rows.columns]
    ends = rows.groupby(keys)[["step", "frames", "episodes"]].max()
    if ends.empty:
        return "", math.nan

    def spread(column: str) -> str:
        values = ends[column].dropna()
        if values.empty:
            return ""
        low, mid, high = values.min(), values.median(), values.max()
        text = f"{mid:,.0f}"
        return text if low == high else f"{text} (median; {low:,.0f} to {high:,.0f})"

    parts = [f"{spread('step')} agent steps"]
    # frames are counted where an environment has them (0 or missing elsewhere: the tabular and synthetic runs)
    if ends["frames"].fillna(0).gt(0).any() and not np.allclose(ends["frames"], ends["step"], equal_nan=True):
        parts.append(f"{spread('frames')} frames")
    if ends["episodes"].fillna(0).gt(0).any():  # the tabular and synthetic runs count no episodes
        parts.append(f"{spread('episodes')} training episodes")
    text = ", ".join(parts) + f" per run ({len(ends)} runs)"
    budget = claim.published_budget
    if "amount" not in budget:
        return text, math.nan
    return text, float(ends[BUDGET_UNITS[budget["unit"]]].median()) / float(budget["amount"])


def _aggregation(claim: Claim, tasks: list) -> str:
    shown = ", ".join(map(str, tasks))
    over = f"{len(tasks)} {claim.task} value(s): {shown}"
    text = {
        "prob_improvement": f"P({claim.a} > {claim.b}) per {claim.task} (Mann-Whitney), averaged over {over}",
        "mean_difference": f"mean of {claim.a} minus mean of {claim.b} over runs and {over}",
        "ratio": f"ratio of the means of {claim.a} and {claim.b} over runs and {over}",
        "slope": f"least-squares slope of {claim.a}'s mean per {claim.task} against "
                 + ("log2 " if claim.log_x else "") + f"{claim.task}, over {over}",
        "mean": f"mean of {claim.a} over runs and {over}",
    }[claim.comparison]
    return text + "; runs resampled within each task (stratified bootstrap)"


def _scopes(claim: Claim, rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    if not claim.split_by and not claim.families:
        return [("all", rows)]
    scopes = [(f"{name}: {', '.join(map(str, members))}", rows[rows[claim.task].isin(list(members))])
              for name, members in claim.families.items()]
    if claim.split_by:
        # Only values with the claim's metric: other tasks of the suite (e.g. the fit experiments beside the
        # noise models) are not this claim's.
        values = rows.loc[rows["metric"] == claim.metric, claim.split_by].dropna().unique()
        scopes += [(f"{claim.split_by}={value}", rows[rows[claim.split_by] == value]) for value in sorted(values)]
    return scopes


def _judge_scope(claim: Claim, scope: str, rows: pd.DataFrame, scale: str, threshold: float, reps: int | None,
                 base_seed: int, power_sims: int) -> Verdict:
    common = {"scope": scope, "null": _null(claim, threshold),
              "published": math.nan if claim.published is None else float(claim.published)}

    def inconclusive(reason: str, **numbers) -> Verdict:
        return Verdict(claim.id, scale, INCONCLUSIVE, reason, **common, **numbers)

    def not_run(reason: str) -> Verdict:
        return Verdict(claim.id, scale, NOT_RUN, reason, **common)

    groups = _groups(claim)
    chosen = rows[rows[claim.group].isin(groups)]
    if chosen.empty:
        return not_run("no runs")
    targets = return_targets(claim, rows) if claim.score == "episodes_to_target" else None
    scores = run_scores(claim, chosen, targets)
    _one_run_per_seed(claim, scores)
    missing = [g for g in groups if g not in set(scores[claim.group])]
    if missing:
        return not_run(f"no runs of {', '.join(missing)}")
    tasks = sorted(scores[claim.task].unique())
    try:
        matrices = tidy.score_matrix(scores, group=claim.group, task=claim.task, tasks=tasks)
    except ValueError as error:
        return inconclusive(str(error))
    budget, fraction = run_budget(claim, chosen)
    common.update(budget=budget, budget_fraction=fraction)
    n_runs = sum(m.size for m in matrices.values())
    runs = "; ".join(f"{g}: {m.shape[0]} runs x {m.shape[1]} tasks" for g, m in matrices.items())
    fewest = min(m.shape[0] for m in matrices.values())
    if fewest < MIN_RUNS[scale]:
        return inconclusive(f"{fewest} runs per task, {scale} needs {MIN_RUNS[scale]}", n_runs=n_runs, runs=runs)
    if claim.comparison == "slope" and len(tasks) < 3:
        return inconclusive(f"a slope needs 3 or more {claim.task} values, got {len(tasks)}", n_runs=n_runs,
                            runs=runs)
    estimate, low, high = _estimate(claim, matrices, tasks, reps, base_seed)
    verdict, reason = judge(claim, low, high, threshold)
    if targets is not None:
        missed = int((~scores["reached"]).sum())
        shown = ", ".join(f"{e}: {t:.4g}" for e, t in targets.items())
        reason += (f"; return targets ({claim.target}) {shown}; {missed} of {len(scores)} runs never reached "
                   "theirs (counted at their last episode count, a lower bound)")
    detectable = detectable_effect(claim, matrices, tasks, threshold, sims=power_sims, base_seed=base_seed)
    return Verdict(claim.id, scale, verdict, reason, **common, estimate=estimate, ci_low=low, ci_high=high,
                   versus_published=versus_published(claim, low, high), detectable=detectable, n_runs=n_runs,
                   runs=runs, aggregation=_aggregation(claim, tasks))


def evaluate_scopes(claim: Claim, df: pd.DataFrame, scale: str, *, reps: int | None = None, base_seed: int = 0,
                    power_sims: int = POWER_SIMS) -> list[Verdict]:
    """The claim's verdicts on the tidy table ``df`` at ``scale``, one per scope (``_scopes``: all, or one per
    family and per ``split_by`` value); no runs -> not run, too few -> inconclusive.

    ``reps`` defaults to rliable's: 2,000 for probability of improvement, 50,000 otherwise.
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    threshold = float(claim.thresholds.get(scale, math.nan))
    known = {"null": _null(claim, threshold),
             "published": math.nan if claim.published is None else float(claim.published)}
    needed = [c for c in dict.fromkeys((claim.group, claim.task, *claim.where, *filter(None, [claim.split_by])))
              if c not in df.columns]
    if needed:
        return [Verdict(claim.id, scale, NOT_RUN, f"no runs: the table has no column {needed}", **known)]
    rows = _select(claim, df)
    if rows.empty:
        return [Verdict(claim.id, scale, NOT_RUN, "no runs", **known)]
    return [_judge_scope(claim, scope, part, scale, threshold, reps, base_seed, power_sims)
            for scope, part in _scopes(claim, rows)]


def evaluate(claim: Claim, df: pd.DataFrame, scale: str, **options) -> Verdict:
    """The single verdict of a claim judged over all its tasks at once (``evaluate_scopes`` for split claims)."""
    verdicts = evaluate_scopes(claim, df, scale, **options)
    if len(verdicts) != 1:
        raise ValueError(f"claim {claim.id!r} has {len(verdicts)} scopes; use evaluate_scopes")
    return verdicts[0]


def evaluate_all(claims: Sequence[Claim], df: pd.DataFrame, scale: str, *, reps: int | None = None,
                 base_seed: int = 0, power_sims: int = POWER_SIMS) -> pd.DataFrame:
    """One row per claim and scope: the Verdict's fields beside the claim's source, statement, comparison,
    published note and figure."""
    rows = []
    for claim in claims:
        for verdict in evaluate_scopes(claim, df, scale, reps=reps, base_seed=base_seed, power_sims=power_sims):
            rows.append({**dataclasses.asdict(verdict), "suite": claim.suite, "source": claim.source,
                         "statement": claim.statement, "comparison": claim.comparison, "a": claim.a,
                         "b": claim.b or "", "published_note": claim.published_note, "figure": claim.figure or "",
                         "published_budget": claim.published_budget.get("note", ""),
                         "counterpart": claim.counterpart or ""})
    return pd.DataFrame(rows)
