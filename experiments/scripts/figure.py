"""Snakemake script of rule figure: a suite's tidy table -> one declared figure, as PNG and PDF.

Each ``plot`` name of experiments/schemas/suite.schema.json maps to a function of analysis.figures; the two
rliable figures first compute their statistics with analysis.tidy and analysis.stats (the glue below).
"""


import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import figures, reference, stats, tidy

TAUS = 81  # thresholds of a performance profile (rliable's Atari profiles use 81)


def normalized_scores(df: pd.DataFrame, normalization: str, metric: str) -> pd.DataFrame:
    """Each run's final score (mean over the last 10% of its steps), normalized with ``normalization``
    (reference.NORMALIZATIONS: human tables for Atari, minatar_dqn5m for MinAtar)."""
    scores = tidy.final_scores(df, metric, last_fraction=tidy.FINAL_FRACTION)
    return tidy.normalized(scores, normalization)


def _reps(reps: int | None) -> dict:
    return {} if reps is None else {"reps": reps}


def aggregate_intervals(df: pd.DataFrame, reps: int | None, *, normalization: str = reference.DQN_ZOO,
                        metric: str = "eval_return"):
    """Agarwal et al. 2021, Fig. 1 style: IQM, median, mean and optimality gap of normalized scores."""
    matrices = tidy.score_matrix(normalized_scores(df, normalization, metric))
    intervals = stats.aggregate_intervals(matrices, **_reps(reps))
    return figures.aggregate_intervals_plot(intervals, score_label=reference.normalization_label(normalization))


def performance_profile(df: pd.DataFrame, reps: int | None, *, normalization: str = reference.DQN_ZOO,
                        metric: str = "eval_return"):
    """Agarwal et al. 2021 performance profile over thresholds spanning 0 (random) to the best run, at least
    to 1 (human, or the reference score)."""
    scores = normalized_scores(df, normalization, metric)
    low, high = min(0.0, scores["score"].min()), max(1.0, scores["score"].max())
    profiles = stats.performance_profiles(tidy.score_matrix(scores), np.linspace(low, high, TAUS),
                                          **_reps(reps))
    return figures.performance_profile_plot(profiles, score_label=reference.normalization_label(normalization))


def _plain(function):
    def plot(df, reps, **args):
        return function(df, **args)

    return plot


PLOTS = {
    "overestimation_curves": _plain(figures.overestimation_curves),
    "learning_curves": _plain(figures.learning_curves),
    "naf_vs_ddpg_curves": _plain(figures.naf_vs_ddpg_curves),
    "imagination_curves": _plain(figures.imagination_curves),
    "tabular_convergence": _plain(figures.tabular_convergence),
    "sensitivity": _plain(figures.sensitivity),
    "overestimation_bias": _plain(figures.overestimation_bias),
    "aggregate_intervals": aggregate_intervals,
    "performance_profile": performance_profile,
}


def main(snakemake) -> None:
    spec = snakemake.params.spec
    df = pd.read_parquet(snakemake.input.tidy)
    fig = PLOTS[spec["plot"]](df, snakemake.params.reps, **spec.get("args", {}))
    base = Path(snakemake.output.png).with_suffix("")
    figures.save_figure(fig, base)
    print(f"figure {spec['name']} ({spec['plot']}, suite {spec['suite']}): {base}.{{png,pdf}}")


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
