"""rliable statistics with intervals that reproduce bit-for-bit (Agarwal et al. 2021).

Inputs are score matrices {name: array [runs, tasks]} (tidy.score_matrix); outputs are tidy DataFrames.

Why each name gets its own seed: rliable 1.2's stratified bootstrap draws its resampling indices from
NumPy's *global* random state (``np.random.choice`` in ``StratifiedBootstrap.update_indices``) and ignores
the ``random_state`` it is given, and ``get_interval_estimates`` walks the dict in order. One shared stream
therefore makes an algorithm's interval depend on the dict's order and on which other algorithms are in it.
Here every bootstrap runs alone, with the global state seeded from a base seed and a stable hash of the
algorithm's name and restored afterwards; the same seed is also passed as ``random_state`` so the result
stays seeded should rliable start honouring it.

Pins (pyproject.toml): arch 8 rejects rliable's ``random_state`` and pandas 3 breaks arch 7.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics

# Agarwal et al. 2021 (rliable defaults): 50,000 replications for aggregate intervals, 2,000 for performance
# profiles and probability of improvement, whose statistic is costlier per replication.
AGGREGATE_REPS = 50_000
PROFILE_REPS = 2_000
IMPROVEMENT_REPS = 2_000
CONFIDENCE = 0.95


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of all run x task scores (25% trimmed each side)."""
    return float(metrics.aggregate_iqm(scores))


def optimality_gap(scores: np.ndarray, gamma: float = 1.0) -> float:
    """How far scores fall short of ``gamma`` (1 = human level for human-normalized scores), clipped at it."""
    return float(metrics.aggregate_optimality_gap(scores, gamma))


# rliable's aggregates: median and mean are of the per-task means over runs, IQM and optimality gap pool
# all run x task scores.
AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {
    "iqm": iqm,
    "median": lambda s: float(metrics.aggregate_median(s)),
    "mean": lambda s: float(metrics.aggregate_mean(s)),
    "optimality_gap": optimality_gap,
}


def name_seed(name: str, base_seed: int = 0) -> int:
    """A 32-bit seed from ``base_seed`` and ``name`` (SHA-256, stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(f"{base_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[np.random.RandomState]:
    # The legacy global state is the one rliable 1.2 draws from (module docstring).
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        with warnings.catch_warnings():
            # arch 7 deprecates random_state in favour of generator; rliable 1.2 only knows random_state.
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            yield np.random.RandomState(seed)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def bootstrap_interval(name: str, scores: np.ndarray | Sequence[np.ndarray],
                       statistic: Callable[..., np.ndarray | float], *, reps: int, base_seed: int = 0,
                       confidence: float = CONFIDENCE, task_bootstrap: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Point estimate and stratified-bootstrap interval [2, ...] of ``statistic`` for one named score set.

    ``scores`` is one [runs, tasks] matrix, or a sequence of them (e.g. (x, y) for probability of
    improvement), each resampled independently over runs within tasks. The resampling stream is seeded by
    ``name_seed(name, base_seed)`` alone.
    """
    with _seeded_global_numpy(name_seed(name, base_seed)) as random_state:
        points, intervals = rly.get_interval_estimates(
            {name: scores}, statistic, reps=reps, confidence_interval_size=confidence,
            task_bootstrap=task_bootstrap, random_state=random_state)
    return np.asarray(points[name]), np.asarray(intervals[name])


def aggregate_intervals(score_dict: Mapping[str, np.ndarray], aggregates: Sequence[str] = tuple(AGGREGATES),
                        *, reps: int = AGGREGATE_REPS, base_seed: int = 0,
                        confidence: float = CONFIDENCE) -> pd.DataFrame:
    """IQM, median, mean and optimality gap with stratified-bootstrap CIs, one row per (algo, aggregate).

    Columns: algo, aggregate, estimate, ci_low, ci_high, n_runs, n_tasks, reps.
    """
    functions = [AGGREGATES[a] for a in aggregates]

    def statistic(s: np.ndarray) -> np.ndarray:
        return np.array([f(s) for f in functions])

    rows = []
    for algo in sorted(score_dict):
        scores = score_dict[algo]
        point, interval = bootstrap_interval(algo, scores, statistic, reps=reps, base_seed=base_seed,
                                             confidence=confidence)
        for i, aggregate in enumerate(aggregates):
            rows.append({"algo": algo, "aggregate": aggregate, "estimate": point[i], "ci_low": interval[0, i],
                         "ci_high": interval[1, i], "n_runs": scores.shape[0], "n_tasks": scores.shape[1],
                         "reps": reps})
    return pd.DataFrame(rows)


def performance_profiles(score_dict: Mapping[str, np.ndarray], taus: Sequence[float] | np.ndarray, *,
                         reps: int = PROFILE_REPS, base_seed: int = 0,
                         confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Score distributions: fraction of runs (over all tasks) scoring above each tau, with CIs.

    Columns: algo, tau, fraction, ci_low, ci_high. ``rly.create_performance_profile`` takes no random state,
    so each algorithm is profiled alone under its own seeded stream.
    """
    taus = np.asarray(taus, dtype=float)
    rows = []
    for algo in sorted(score_dict):
        with _seeded_global_numpy(name_seed(algo, base_seed)):
            profile, interval = rly.create_performance_profile(
                {algo: score_dict[algo]}, taus, reps=reps, confidence_interval_size=confidence)
        rows.append(pd.DataFrame({"algo": algo, "tau": taus, "fraction": profile[algo],
                                  "ci_low": interval[algo][0], "ci_high": interval[algo][1]}))
    return pd.concat(rows, ignore_index=True)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray, *, name: str,
                               reps: int = IMPROVEMENT_REPS, base_seed: int = 0,
                               confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """P(X > Y) averaged over tasks (Mann-Whitney per task), with its CI: (estimate, ci_low, ci_high).

    ``name`` (e.g. "double_dqn>dqn") seeds the bootstrap, so each pair has its own stream.
    """
    point, interval = bootstrap_interval(name, (scores_x, scores_y), metrics.probability_of_improvement,
                                         reps=reps, base_seed=base_seed, confidence=confidence)
    low, high = interval.ravel()
    return float(point), float(low), float(high)


def improvement_table(score_dict: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]], *,
                      reps: int = IMPROVEMENT_REPS, base_seed: int = 0,
                      confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Probability of improvement for each (x, y) pair: columns x, y, estimate, ci_low, ci_high, reps."""
    rows = []
    for x, y in pairs:
        estimate, low, high = probability_of_improvement(
            score_dict[x], score_dict[y], name=f"{x}>{y}", reps=reps, base_seed=base_seed,
            confidence=confidence)
        rows.append({"x": x, "y": y, "estimate": estimate, "ci_low": low, "ci_high": high, "reps": reps})
    return pd.DataFrame(rows)
