import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis import claims

REPS = 200  # bootstrap replications: enough for the verdict logic, cheap on 2 CPU cores
SEEDS = range(6)  # quick scale needs 5 runs per task


def _table(values_by_algo, suite="s", metric="eval_return", envs=("A", "B"), **extra):
    """One observation per (algo, env, seed) at step 100: value = values_by_algo[algo](seed, env index)."""
    rows = [{"run_id": "r", "suite": suite, "algo": algo, "env": env, "protocol": "p", "seed": seed,
             "step": 100, "frames": 400, "episodes": 10, "metric": metric, "value": value(seed, j),
             "status": "complete", **extra}
            for algo, value in values_by_algo.items() for j, env in enumerate(envs) for seed in SEEDS]
    return pd.DataFrame(rows)


def _claim(**fields):
    base = {"id": "c", "suite": "s", "source": "paper, Fig. 1", "statement": "a beats b",
            "metric": "eval_return", "comparison": "prob_improvement", "a": "a", "b": "b",
            "thresholds": {"smoke": 0.5, "quick": 0.6, "paper": 0.7}}
    return claims.Claim(**{**base, **fields})


def _evaluate(claim, df, scale="quick"):
    return claims.evaluate(claim, df, scale, reps=REPS)


def test_project_claims_load_and_cover_every_suite_in_the_design():
    loaded = claims.load_claims()
    assert {c.suite for c in loaded} == {"overestimation", "overestimation_synthetic", "naf_vs_ddpg",
                                         "imagination", "continuous_max", "sensitivity", "atari_aggregate",
                                         "tabular"}
    assert all(c.figure for c in loaded)


def test_readme_maps_every_claim_to_its_suite_and_figure():
    """The README's claim -> suite -> figure map is the researcher's index: it must list every claim of
    claims.yaml with the suite and figure the claim names, and no claim that is gone."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 5:
            rows[cells[0]] = (cells[3], cells[4])
    loaded = claims.load_claims()
    assert rows == {c.id: (c.suite, c.figure) for c in loaded}


def test_prob_improvement_is_reproduced_when_a_clearly_beats_b():
    df = _table({"a": lambda s, j: 10.0 + s, "b": lambda s, j: float(s)})
    verdict = _evaluate(_claim(), df)
    assert verdict.verdict == claims.REPRODUCED
    assert verdict.estimate == 1.0 and verdict.ci_low > 0.5
    assert verdict.n_runs == 24 and verdict.runs == "a: 6 runs x 2 tasks; b: 6 runs x 2 tasks"


def test_prob_improvement_is_not_reproduced_when_b_clearly_beats_a():
    df = _table({"a": lambda s, j: float(s), "b": lambda s, j: 10.0 + s})
    verdict = _evaluate(_claim(), df)
    assert verdict.verdict == claims.NOT_REPRODUCED and verdict.ci_high < 0.5


def test_prob_improvement_is_inconclusive_when_samples_interleave():
    df = _table({"a": lambda s, j: float(2 * s), "b": lambda s, j: 2 * s + 1.0})
    verdict = _evaluate(_claim(), df)
    assert verdict.verdict == claims.INCONCLUSIVE
    assert verdict.ci_low <= 0.5 <= verdict.ci_high


def test_better_lower_turns_the_comparison_around():
    df = _table({"a": lambda s, j: float(s), "b": lambda s, j: 10.0 + s})
    assert _evaluate(_claim(better="lower"), df).verdict == claims.REPRODUCED


def test_mean_difference_gives_each_verdict():
    claim = _claim(comparison="mean_difference", thresholds={"smoke": 0.0, "quick": 1.0, "paper": 1.0})
    far = _table({"a": lambda s, j: 5.0 + 0.1 * s, "b": lambda s, j: 0.1 * s})
    opposite = _table({"a": lambda s, j: 0.1 * s, "b": lambda s, j: 5.0 + 0.1 * s})
    noisy = _table({"a": lambda s, j: 10.0 * (s % 2) + 0.5, "b": lambda s, j: 10.0 * ((s + 1) % 2)})
    assert _evaluate(claim, far).verdict == claims.REPRODUCED
    assert _evaluate(claim, opposite).verdict == claims.NOT_REPRODUCED
    assert _evaluate(claim, noisy).verdict == claims.INCONCLUSIVE


def test_ratio_of_episodes_needed_measures_data_efficiency():
    # a needs a third of b's episodes: 3x data efficiency against a claimed 2x.
    claim = _claim(comparison="ratio", better="lower", thresholds={"smoke": 1.0, "quick": 2.0, "paper": 2.0})
    three_times = _table({"a": lambda s, j: 100.0 + s, "b": lambda s, j: 300.0 + s})
    verdict = _evaluate(claim, three_times)
    assert verdict.verdict == claims.REPRODUCED
    assert verdict.estimate == pytest.approx(302.5 / 102.5)
    # 1.2x: faster, but the CI lies wholly short of the claimed 2x.
    slightly = _table({"a": lambda s, j: 100.0 + s, "b": lambda s, j: 120.0 + s})
    verdict = _evaluate(claim, slightly)
    assert verdict.verdict == claims.NOT_REPRODUCED and "smaller effect than claimed" in verdict.reason


def test_mean_below_a_tolerance_gives_each_verdict():
    claim = _claim(comparison="mean", b=None, better="lower", metric="q_error_max", score="last",
                   thresholds={"smoke": 1.0, "quick": 0.1, "paper": 0.05})
    converged = _table({"a": lambda s, j: 0.01 * (s + 1)}, metric="q_error_max")
    stuck = _table({"a": lambda s, j: 1.0 + 0.1 * s}, metric="q_error_max")
    borderline = _table({"a": lambda s, j: [0.0, 0.2][s % 2]}, metric="q_error_max")
    assert _evaluate(claim, converged).verdict == claims.REPRODUCED
    assert _evaluate(claim, stuck).verdict == claims.NOT_REPRODUCED
    assert _evaluate(claim, borderline).verdict == claims.INCONCLUSIVE


def test_slope_of_bias_against_log_number_of_actions():
    claim = _claim(comparison="slope", b=None, metric="estimation_bias", task="num_actions", log_x=True,
                   thresholds={"smoke": 0.0, "quick": 0.03, "paper": 0.05})
    parts = [_table({"a": lambda s, j, m=m: (m - 1) / (m + 1) + 0.001 * s}, metric="estimation_bias",
                    envs=("toy",), num_actions=m) for m in (2, 4, 8, 16)]
    verdict = _evaluate(claim, pd.concat(parts))
    assert verdict.verdict == claims.REPRODUCED
    expected = np.polyfit([1, 2, 3, 4], [(m - 1) / (m + 1) + 0.0025 for m in (2, 4, 8, 16)], 1)[0]
    assert verdict.estimate == pytest.approx(expected)


def test_overestimation_scores_subtract_the_true_value_per_run():
    claim = _claim(metric="q_estimate", minus="true_value", better="lower", a="double_dqn", b="dqn")
    df = pd.concat([_table({"dqn": lambda s, j: 10.0 + s, "double_dqn": lambda s, j: 5.0 + s},
                           metric="q_estimate"),
                    _table({"dqn": lambda s, j: 1.0, "double_dqn": lambda s, j: 4.0}, metric="true_value")])
    scores = claims.run_scores(claim, claims._select(claim, df))
    assert sorted(scores.groupby("algo")["score"].first().tolist()) == [1.0, 9.0]
    assert _evaluate(claim, df).verdict == claims.REPRODUCED


def test_claims_without_runs_are_inconclusive_with_the_reason():
    df = _table({"a": lambda s, j: 1.0})
    assert _evaluate(_claim(suite="elsewhere"), df).reason == "no runs"
    assert _evaluate(_claim(), df).reason == "no runs of b"
    assert _evaluate(_claim(group="loss"), df).reason == "no runs: the table has no column ['loss']"
    few = df[df["seed"] < 2]
    both = pd.concat([few, few.assign(algo="b")])
    verdict = _evaluate(_claim(), both)
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason == "2 runs per task, quick needs 5"


def test_evaluation_is_reproducible_and_evaluate_all_keeps_the_claim_beside_its_verdict():
    df = _table({"a": lambda s, j: float(s) + j, "b": lambda s, j: float(s)})
    table = claims.evaluate_all([_claim(), _claim(id="d", suite="none")], df, "quick", reps=REPS)
    again = claims.evaluate_all([_claim()], df, "quick", reps=REPS)
    pd.testing.assert_frame_equal(table.iloc[:1], again, check_exact=True)
    assert table.loc[1, "verdict"] == claims.INCONCLUSIVE
    assert table.loc[0, "source"] == "paper, Fig. 1" and table.loc[0, "threshold"] == 0.6


def test_invalid_claims_name_the_key_and_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="comparison 'median' is not valid; valid: prob_improvement"):
        _claim(comparison="median")
    with pytest.raises(ValueError, match="mean needs a alone"):
        _claim(comparison="mean")
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n  - {id: x, colour: red}\n")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        claims.load_claims(path)


def test_verdict_fields_are_plain_values_for_tables():
    verdict = _evaluate(_claim(), _table({"a": lambda s, j: 10.0 + s, "b": lambda s, j: float(s)}))
    assert all(isinstance(v, (str, int, float)) for v in dataclasses.asdict(verdict).values())
