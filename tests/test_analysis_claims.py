import dataclasses

import numpy as np
import pandas as pd
import pytest

from analysis import claims

REPS = 200  # bootstrap replications: enough for the verdict logic, cheap on 2 CPU cores
SEEDS = range(6)  # quick scale needs 5 runs per task
POWER_SIMS = 50  # simulated experiments per power estimate: enough to exercise the simulation


def _table(values_by_algo, suite="s", metric="eval_return", envs=("A", "B"), **extra):
    """One observation per (algo, env, seed) at step 100: value = values_by_algo[algo](seed, env index)."""
    rows = [{"run_id": "r", "suite": suite, "algo": algo, "env": env, "protocol": "p", "seed": seed,
             "step": 100, "frames": 400, "episodes": 10, "metric": metric, "value": value(seed, j),
             "status": "complete", **extra}
            for algo, value in values_by_algo.items() for j, env in enumerate(envs) for seed in SEEDS]
    return pd.DataFrame(rows)


def _claim(**fields):
    base = {"id": "c", "suite": "s", "source": "paper, Fig. 1", "statement": "a beats b",
            "metric": "eval_return", "comparison": "prob_improvement", "a": "a", "b": "b"}
    return claims.Claim(**{**base, **fields})


def _evaluate(claim, df, scale="quick"):
    return claims.evaluate(claim, df, scale, reps=REPS, power_sims=POWER_SIMS)


def test_project_claims_load_and_cover_every_suite_in_the_design():
    loaded = claims.load_claims()
    assert {c.suite for c in loaded} == {"overestimation", "overestimation_synthetic", "naf_vs_ddpg",
                                         "imagination", "continuous_max", "sensitivity", "atari_aggregate",
                                         "tabular", "overestimation_minatar", "minatar_variants"}
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


def test_prob_improvement_is_contradicted_when_b_clearly_beats_a():
    df = _table({"a": lambda s, j: float(s), "b": lambda s, j: 10.0 + s})
    verdict = _evaluate(_claim(), df)
    assert verdict.verdict == claims.CONTRADICTED and verdict.ci_high < 0.5


def test_prob_improvement_is_inconclusive_when_samples_interleave():
    df = _table({"a": lambda s, j: float(2 * s), "b": lambda s, j: 2 * s + 1.0})
    verdict = _evaluate(_claim(), df)
    assert verdict.verdict == claims.INCONCLUSIVE
    assert verdict.ci_low <= 0.5 <= verdict.ci_high


def test_better_lower_turns_the_comparison_around():
    df = _table({"a": lambda s, j: float(s), "b": lambda s, j: 10.0 + s})
    assert _evaluate(_claim(better="lower"), df).verdict == claims.REPRODUCED


def test_mean_difference_gives_each_verdict():
    claim = _claim(comparison="mean_difference")
    far = _table({"a": lambda s, j: 5.0 + 0.1 * s, "b": lambda s, j: 0.1 * s})
    opposite = _table({"a": lambda s, j: 0.1 * s, "b": lambda s, j: 5.0 + 0.1 * s})
    noisy = _table({"a": lambda s, j: 10.0 * (s % 2) + 0.5, "b": lambda s, j: 10.0 * ((s + 1) % 2)})
    assert _evaluate(claim, far).verdict == claims.REPRODUCED
    assert _evaluate(claim, opposite).verdict == claims.CONTRADICTED
    assert _evaluate(claim, noisy).verdict == claims.INCONCLUSIVE


def test_ratio_of_episodes_needed_measures_data_efficiency():
    # a needs a third of b's episodes: 3x data efficiency against a claimed 2x.
    claim = _claim(comparison="ratio", better="lower", published=2.0)
    three_times = _table({"a": lambda s, j: 100.0 + s, "b": lambda s, j: 300.0 + s})
    verdict = _evaluate(claim, three_times)
    assert verdict.verdict == claims.REPRODUCED
    assert verdict.estimate == pytest.approx(302.5 / 102.5)
    assert verdict.versus_published == "ours larger"
    # 1.2x: faster, so reproduced (the CI excludes 1 as claimed), and smaller than the published 2x: a
    # significant effect in the claimed direction is never called a failure.
    slightly = _table({"a": lambda s, j: 100.0 + s, "b": lambda s, j: 120.0 + s})
    verdict = _evaluate(claim, slightly)
    assert verdict.verdict == claims.REPRODUCED and verdict.ci_high < 2.0
    assert verdict.versus_published == "ours smaller"


def test_mean_below_a_tolerance_gives_each_verdict():
    claim = _claim(comparison="mean", b=None, better="lower", metric="q_error_max", score="last",
                   thresholds={"smoke": 1.0, "quick": 0.1, "paper": 0.05})
    converged = _table({"a": lambda s, j: 0.01 * (s + 1)}, metric="q_error_max")
    stuck = _table({"a": lambda s, j: 1.0 + 0.1 * s}, metric="q_error_max")
    borderline = _table({"a": lambda s, j: [0.0, 0.2][s % 2]}, metric="q_error_max")
    assert _evaluate(claim, converged).verdict == claims.REPRODUCED
    assert _evaluate(claim, stuck).verdict == claims.CONTRADICTED
    assert _evaluate(claim, borderline).verdict == claims.INCONCLUSIVE


def test_slope_of_bias_against_log_number_of_actions():
    claim = _claim(comparison="slope", b=None, metric="estimation_bias", task="num_actions", log_x=True)
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


def test_claims_without_runs_are_not_run_with_the_reason_and_too_few_runs_are_inconclusive():
    df = _table({"a": lambda s, j: 1.0})
    for claim, reason in [(_claim(suite="elsewhere"), "no runs"), (_claim(), "no runs of b"),
                          (_claim(group="loss"), "no runs: the table has no column ['loss']")]:
        verdict = _evaluate(claim, df)
        assert verdict.verdict == claims.NOT_RUN and verdict.reason == reason
    few = df[df["seed"] < 2]
    both = pd.concat([few, few.assign(algo="b")])
    verdict = _evaluate(_claim(), both)
    assert verdict.verdict == claims.INCONCLUSIVE and verdict.reason == "2 runs per task, quick needs 5"


def test_evaluation_is_reproducible_and_evaluate_all_keeps_the_claim_beside_its_verdict():
    df = _table({"a": lambda s, j: float(s) + j, "b": lambda s, j: float(s)})
    table = claims.evaluate_all([_claim(), _claim(id="d", suite="none")], df, "quick", reps=REPS)
    again = claims.evaluate_all([_claim()], df, "quick", reps=REPS)
    pd.testing.assert_frame_equal(table.iloc[:1], again, check_exact=True)
    assert table.loc[1, "verdict"] == claims.NOT_RUN
    assert table.loc[0, "source"] == "paper, Fig. 1" and table.loc[0, "null"] == 0.5


def test_invalid_claims_name_the_key_and_the_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="comparison 'median' is not valid; valid: prob_improvement"):
        _claim(comparison="median")
    with pytest.raises(ValueError, match="mean needs a alone"):
        _claim(comparison="mean")
    path = tmp_path / "claims.yaml"
    path.write_text("claims:\n  - {id: x, colour: red}\n")
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        claims.load_claims(path)


def test_a_counterpart_must_name_another_claim_on_another_testbed(tmp_path):
    path = tmp_path / "claims.yaml"
    entry = ("{id: %s, suite: %s, source: p, statement: s, metric: eval_return, comparison: prob_improvement, "
             "a: a, b: b%s}")
    path.write_text("claims:\n  - " + entry % ("atari", "atari_aggregate", ", counterpart: minatar") + "\n")
    with pytest.raises(ValueError, match="counterpart 'minatar' is not a claim in .*; valid: $"):
        claims.load_claims(path)
    path.write_text("claims:\n  - " + entry % ("atari", "atari_aggregate", ", counterpart: other")
                    + "\n  - " + entry % ("other", "atari_aggregate", "") + "\n")
    with pytest.raises(ValueError, match="counterpart 'other' is in the same suite \\(atari_aggregate\\)"):
        claims.load_claims(path)
    path.write_text("claims:\n  - " + entry % ("atari", "atari_aggregate", ", counterpart: minatar")
                    + "\n  - " + entry % ("minatar", "minatar_variants", "") + "\n")
    assert [c.counterpart for c in claims.load_claims(path)] == ["minatar", None]


def test_every_atari_claim_points_to_its_minatar_counterpart_with_the_same_treatment():
    """The Atari-scale claims need a GPU; each names the MinAtar claim that tests its treatment on the CPU."""
    by_id = {c.id: c for c in claims.load_claims()}
    atari = [c for c in by_id.values() if c.suite in ("overestimation", "atari_aggregate")]
    assert len(atari) == 6
    for claim in atari:
        other = by_id[claim.counterpart]
        assert other.suite in ("overestimation_minatar", "minatar_variants"), claim.id
        assert (other.a, other.metric, other.minus, other.comparison) == \
            (claim.a, claim.metric, claim.minus, claim.comparison), claim.id


def test_verdict_fields_are_plain_values_for_tables():
    verdict = _evaluate(_claim(), _table({"a": lambda s, j: 10.0 + s, "b": lambda s, j: float(s)}))
    assert all(isinstance(v, (str, int, float)) for v in dataclasses.asdict(verdict).values())


def _sweep_suite():
    """A sensitivity-like suite: a baseline dqn run (tagged), an lr sweep point of dqn, and double_dqn."""
    def run(run_id, algo, value, **columns):
        return _table({algo: value}, suite="sens", envs=("CartPole-v1",), **columns).assign(run_id=run_id)

    return pd.concat([
        run("base", "dqn", lambda s, j: 100.0 + s, ablation="baseline", lr=1e-3),
        run("lr-0.01", "dqn", lambda s, j: 10.0 + s, lr=1e-2),
        run("double", "double_dqn", lambda s, j: 103.0 + s, ablation="double"),
    ])


def test_a_claim_selects_exactly_the_runs_it_names_in_a_sweep_suite():
    df = _sweep_suite()
    # By algo, dqn holds the baseline and a sweep point: pooling them would make double look better.
    with pytest.raises(ValueError, match="selects 2 runs per seed of algo='dqn'.*base, lr-0.01"):
        _evaluate(_claim(suite="sens", a="double_dqn", b="dqn"), df)
    # By the ablation tag: the baseline alone. P(double > baseline) per seed pair, by hand: double is
    # 103 + s against 100 + t, larger when s + 3 > t, ties at t = s + 3.
    verdict = _evaluate(_claim(suite="sens", group="ablation", a="double", b="baseline"), df)
    pairs = [(s, t) for s in SEEDS for t in SEEDS]
    expected = sum((s + 3 > t) + 0.5 * (s + 3 == t) for s, t in pairs) / len(pairs)
    assert verdict.estimate == pytest.approx(expected)
    assert verdict.runs == "baseline: 6 runs x 1 tasks; double: 6 runs x 1 tasks"


def test_claims_are_judged_per_noise_model_not_pooled():
    """A max-estimator bias of 0.3 per doubling under normal noise and 0.06 under uniform noise: split by env,
    each model gets its own slope; pooled, the two would average to a slope neither model has."""
    parts = [_table({"max": lambda s, j, m=m, k=k: k * np.log2(m) + 0.001 * s}, metric="estimation_bias",
                    envs=(env,), num_actions=m)
             for env, k in (("normal", 0.3), ("uniform", 0.06)) for m in (2, 4, 8, 16)]
    claim = _claim(comparison="slope", a="max", b=None, metric="estimation_bias", task="num_actions",
                   log_x=True, split_by="env")
    verdicts = claims.evaluate_scopes(claim, pd.concat(parts), "quick", reps=REPS, power_sims=POWER_SIMS)
    assert [v.scope for v in verdicts] == ["env=normal", "env=uniform"]
    assert [v.estimate for v in verdicts] == pytest.approx([0.3, 0.06])
    assert all(v.verdict == claims.REPRODUCED and v.n_runs == 24 for v in verdicts)
    with pytest.raises(ValueError, match="2 scopes; use evaluate_scopes"):
        _evaluate(claim, pd.concat(parts))


def test_families_judge_precision_and_locomotion_tasks_apart():
    # a wins on both precision tasks and loses on both locomotion tasks: pooled P(improvement) would be 0.5.
    df = _table({"a": lambda s, j: 10.0 + s if j < 2 else float(s),
                 "b": lambda s, j: float(s) if j < 2 else 10.0 + s}, envs=("P1", "P2", "L1", "L2"))
    claim = _claim(families={"precision": ["P1", "P2"], "locomotion": ["L1", "L2"]})
    verdicts = {v.scope: v for v in claims.evaluate_scopes(claim, df, "quick", reps=REPS, power_sims=POWER_SIMS)}
    assert verdicts["precision: P1, P2"].verdict == claims.REPRODUCED
    assert verdicts["locomotion: L1, L2"].verdict == claims.CONTRADICTED
    assert "averaged over 2 env value(s): P1, P2" in verdicts["precision: P1, P2"].aggregation


def test_batch_statistic_is_rliables_probability_of_improvement_and_the_least_squares_slope():
    from rliable import metrics

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)).round(1), rng.normal(size=(5, 3)).round(1)
    statistic = claims.batch_statistic(_claim(), ["A", "B", "C"])
    assert statistic(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    slope = claims.batch_statistic(_claim(comparison="slope", b=None, log_x=True), [2, 4, 16])
    assert slope(x) == pytest.approx(np.polyfit([1, 2, 4], x.mean(axis=0), 1)[0])


def test_detectable_effect_simulates_the_rule_and_shrinks_with_more_runs():
    """With 10 runs per arm on one task, the rule reproduces a true P(improvement) of 0.8 only about 70% of the
    time (issue 10's own simulation: 0.71), so the effect detectable with 80% power lies a little above 0.8;
    with 40 runs per arm it is smaller."""
    rng = np.random.default_rng(1)
    claim = _claim()

    def detectable(n):
        matrices = {"a": rng.normal(size=(n, 1)), "b": rng.normal(size=(n, 1))}
        return claims.detectable_effect(claim, matrices, ["A"], sims=200, reps=300)

    ten, forty = detectable(10), detectable(40)
    assert 0.78 < ten < 0.9
    assert 0.55 < forty < ten


def test_data_efficiency_against_a_fixed_target_does_not_reward_an_early_plateau():
    """Run a plateaus at 50 after 1 episode; run b climbs to 100 by episode 5. Within 5% of its own best, a
    looks 5x faster; against the best across methods (95), a never gets there and counts at its last episode."""
    steps = range(1, 7)
    rows = [{"run_id": algo, "suite": "s", "algo": algo, "env": "T", "protocol": "p", "seed": seed, "step": k,
             "frames": k, "episodes": k, "metric": "eval_return", "value": value(k), "status": "complete"}
            for algo, value in (("a", lambda k: 50.0), ("b", lambda k: min(20.0 * k, 100.0)))
            for seed in SEEDS for k in steps]
    df = pd.DataFrame(rows)
    claim = _claim(score="episodes_to_target", target="best_across_methods", better="lower")
    assert claims.return_targets(claim, df) == {"T": 95.0}
    verdict = _evaluate(claim, df)
    assert verdict.verdict == claims.CONTRADICTED and verdict.estimate == 0.0
    assert "6 of 12 runs never reached theirs" in verdict.reason
    assert _evaluate(_claim(score="episodes_to_within", better="lower"), df).verdict == claims.REPRODUCED


def test_run_budget_gives_each_runs_steps_frames_and_episodes_and_the_fraction_of_the_published_budget():
    df = _table({"a": lambda s, j: float(s), "b": lambda s, j: float(s)}, envs=("A",))
    df.loc[df["seed"] == 0, "episodes"] = 4  # one member of six finished fewer episodes
    claim = _claim(published_budget={"amount": 1_600, "unit": "frames", "note": "paper, Sec. 5"})
    text, fraction = claims.run_budget(claim, df[df["algo"] == "a"])
    assert text == "100 agent steps, 400 frames, 10 (median; 4 to 10) training episodes per run (6 runs)"
    assert fraction == pytest.approx(400 / 1_600)
    # the same runs against a budget in episodes; and no number where the source states none
    by_episodes = _claim(published_budget={"amount": 40, "unit": "episodes", "note": "paper"})
    assert claims.run_budget(by_episodes, df)[1] == pytest.approx(10 / 40)
    assert np.isnan(claims.run_budget(_claim(published_budget={"note": "not stated"}), df)[1])
    # runs that count no frames (tabular, synthetic: frames 0) print no frames, not "0 frames"
    no_frames = df.assign(frames=0, episodes=0)
    assert claims.run_budget(claim, no_frames[no_frames["algo"] == "a"])[0] == "100 agent steps per run (6 runs)"


def test_a_verdict_carries_the_budget_of_the_runs_it_judged():
    df = _table({"a": lambda s, j: 10.0 + s, "b": lambda s, j: float(s)})
    verdict = _evaluate(_claim(published_budget={"amount": 1_000, "unit": "agent_steps", "note": "paper"}), df)
    assert verdict.budget == "100 agent steps, 400 frames, 10 training episodes per run (24 runs)"
    assert verdict.budget_fraction == pytest.approx(0.1)


@pytest.mark.parametrize("budget, message", [
    ({"amount": 5, "unit": "frames", "seeds": 3, "note": "x"}, "unknown keys ['seeds']"),
    ({"amount": 5, "unit": "frames"}, "needs a note"),
    ({"amount": 5, "note": "x"}, "amount and unit together"),
    ({"amount": 5, "unit": "hours", "note": "x"}, "valid: agent_steps, frames, episodes"),
    ({"amount": -1, "unit": "frames", "note": "x"}, "must be a positive number"),
])
def test_a_malformed_published_budget_is_refused_with_the_valid_choices(budget, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _claim(published_budget=budget)
