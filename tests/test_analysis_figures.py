import numpy as np
import pandas as pd
import pytest

from analysis import figures

STEPS = [0, 100, 200]


def _rows(algo, env, seed, metric, values, steps=STEPS, episodes=None, **extra):
    return pd.DataFrame({
        "run_id": "r", "suite": "s", "algo": algo, "env": env, "protocol": "nature", "seed": seed,
        "step": steps, "frames": [4 * s for s in steps], "episodes": episodes or [s // 10 for s in steps],
        "metric": metric, "value": values, "status": "complete", **extra,
    })


def _line(ax, label):
    (line,) = [line for line in ax.lines if line.get_label() == label]
    return line


def _band_limits(collection):
    y = collection.get_paths()[0].vertices[:, 1]
    return y.min(), y.max()


def test_a_method_has_one_colour_in_every_figure_and_methods_drawn_together_never_share_one():
    from algorithms.registry import VARIANTS

    dqn_family = ["dqn", "double_dqn", "dueling_dqn", "nstep_dqn", "per_dqn", "per_rank_dqn", "combined_dqn",
                  "double_dqn_clip"]
    continuous = [name for name, v in VARIANTS.items() if v.actions == "continuous"]
    for names in (dqn_family, continuous, ["q_learning", "fitted_q"], ["max_estimator", "double_estimator"]):
        colours = figures._palette(names)
        assert len(set(colours.values())) == len(names), names
    assert figures._palette(["dqn", "per_dqn"])["per_dqn"] == figures._palette(dqn_family)["per_dqn"]
    # names without a colour of their own take unused ones
    mixed = figures._palette(["dqn", "double_dqn", "baseline", "mse"])
    assert len(set(mixed.values())) == 4


def test_learning_curves_legend_names_every_method_of_every_panel_once():
    # dueling ran on the second game only: the legend (built under the panels) still names it, once
    df = pd.concat([_rows("dqn", "A", 0, "eval_return", [0.0, 1.0, 2.0]),
                    _rows("dqn", "B", 0, "eval_return", [0.0, 1.0, 2.0]),
                    _rows("dueling_dqn", "B", 0, "eval_return", [0.0, 2.0, 3.0])])
    fig = figures.learning_curves(df)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [figures.label("dqn"), figures.label("dueling_dqn")]


@pytest.fixture
def overestimation_table():
    parts = []
    for seed, offset in enumerate([0.0, 1.0, 5.0]):
        parts += [
            _rows("dqn", "ALE/Alien-v5", seed, "q_estimate", [1 + offset, 3 + offset, 9 + offset]),
            _rows("dqn", "ALE/Alien-v5", seed, "true_value", [2.0 + seed], steps=[200]),
            _rows("dqn", "ALE/Alien-v5", seed, "eval_return", [10.0 * seed, 20.0, 30.0]),
            _rows("double_dqn", "ALE/Alien-v5", seed, "q_estimate", [1.0, 2.0, 2.5 + offset]),
            _rows("double_dqn", "ALE/Alien-v5", seed, "true_value", [0.0, 2.5], steps=[100, 200]),
            _rows("double_dqn", "ALE/Alien-v5", seed, "eval_return", [0.0, 25.0, 40.0]),
        ]
    return pd.concat(parts, ignore_index=True)


def test_overestimation_curves_draw_seed_medians_final_true_values_and_scores_beneath(overestimation_table):
    fig = figures.overestimation_curves(overestimation_table)
    top, bottom = fig.axes[0], fig.axes[1]
    assert top.get_title() == "alien"
    dqn = _line(top, "dqn")
    np.testing.assert_array_equal(dqn.get_xdata(), [0, 400, 800])  # frames, not agent steps
    np.testing.assert_array_equal(dqn.get_ydata(), [2.0, 4.0, 10.0])  # median of offsets 0, 1, 5
    np.testing.assert_array_equal(_line(top, "double_dqn").get_ydata(), [1.0, 2.0, 3.5])
    # The final policy's true value: median over seeds of each seed's last true_value (2, 3, 4).
    np.testing.assert_array_equal(_line(top, "dqn true value").get_ydata(), [3.0, 3.0])
    np.testing.assert_array_equal(_line(top, "double_dqn true value").get_ydata(), [2.5, 2.5])
    # 10-90% band of dqn at the last step: quantiles of 9, 10, 14.
    low, high = _band_limits(top.collections[0])
    assert low == pytest.approx(np.quantile([1, 2, 6], 0.1))
    assert high == pytest.approx(np.quantile([9, 10, 14], 0.9))
    np.testing.assert_array_equal(_line(bottom, "dqn").get_ydata(), [10.0, 20.0, 30.0])
    np.testing.assert_array_equal(_line(bottom, "double_dqn").get_ydata(), [0.0, 25.0, 40.0])
    assert top.get_yscale() == "linear"


def test_overestimation_curves_use_a_log_scale_for_the_games_van_hasselt_did(overestimation_table):
    table = overestimation_table.assign(env="ALE/WizardOfWor-v5")
    assert figures.overestimation_curves(table).axes[0].get_yscale() == "log"


def test_overestimation_curves_keep_minatar_games_apart_from_their_atari_namesakes(overestimation_table):
    top = figures.overestimation_curves(overestimation_table.assign(env="MinAtar/Asterix-v0")).axes[0]
    assert top.get_title() == "MinAtar/Asterix-v0" and top.get_yscale() == "linear"  # Atari Asterix: log


def test_naf_vs_ddpg_curves_place_step_medians_at_the_median_episode_count():
    table = pd.concat([
        _rows("naf", "Reacher-v5", 0, "eval_return", [-3.0, -2.0, -1.0], episodes=[0, 2, 4]),
        _rows("naf", "Reacher-v5", 1, "eval_return", [-5.0, -4.0, -3.0], episodes=[0, 4, 8]),
        _rows("ddpg", "Reacher-v5", 0, "eval_return", [-9.0, -9.0, -9.0]),
    ])
    ax = figures.naf_vs_ddpg_curves(table).axes[0]
    naf = _line(ax, "NAF")
    np.testing.assert_array_equal(naf.get_xdata(), [0, 3, 6])
    np.testing.assert_array_equal(naf.get_ydata(), [-4.0, -3.0, -2.0])
    np.testing.assert_array_equal(_line(ax, "DDPG").get_ydata(), [-9.0, -9.0, -9.0])


def test_tabular_convergence_plots_q_error_on_a_log_scale():
    table = pd.concat([_rows("q_learning", "toy/chain", s, "q_error_max", [1.0, 0.1, 0.01 * (s + 1)])
                       for s in range(3)])
    ax = figures.tabular_convergence(table).axes[0]
    assert ax.get_yscale() == "log"
    np.testing.assert_allclose(_line(ax, "Q-learning").get_ydata(), [1.0, 0.1, 0.02])


def test_sensitivity_plots_the_median_final_score_against_sorted_hyperparameter_values():
    parts = []
    for size, base in [(1_000_000, 30.0), (10_000, 10.0), (100_000, 20.0)]:
        for seed in range(3):
            parts.append(_rows("dqn", "CartPole-v1", seed, "eval_return", [0.0, 0.0, base + seed],
                               replay_size=size))
    ax = figures.sensitivity(pd.concat(parts), "replay_size").axes[0]
    line = _line(ax, "DQN")
    np.testing.assert_array_equal(line.get_xdata(), [10_000, 100_000, 1_000_000])
    np.testing.assert_array_equal(line.get_ydata(), [11.0, 21.0, 31.0])  # the last 10% is the last eval
    assert ax.get_xscale() == "log"
    assert len(ax.collections[1].get_offsets()) == 9  # every run drawn as a dot


def test_sensitivity_places_an_on_off_ablation_on_categorical_positions():
    parts = [_rows("dqn", "CartPole-v1", s, "eval_return", [0.0, 0.0, v], loss=loss)
             for s in range(2) for loss, v in [("mse", 1.0), ("huber", 5.0)]]
    ax = figures.sensitivity(pd.concat(parts), "loss").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Huber loss", "squared loss"]
    # Points with their CIs, no line joining the categories.
    (points,) = [c for c in ax.containers]
    np.testing.assert_array_equal(points.lines[0].get_ydata(), [5.0, 1.0])
    assert points.lines[0].get_linestyle() == "None"
    assert ax.get_xlabel() == "TD loss"


def test_overestimation_bias_plots_each_estimator_against_the_number_of_actions():
    parts = [_rows(estimator, "toy/noisy_max", s, "estimation_bias", [bias * (1 + 0.01 * s)], steps=[0],
                   num_actions=m)
             for s in range(3) for m in (2, 8, 1024)
             for estimator, bias in [("max_estimator", (m - 1) / (m + 1)), ("double_estimator", 0.0)]]
    ax = figures.overestimation_bias(pd.concat(parts)).axes[0]
    np.testing.assert_array_equal(_line(ax, "max estimator (Q-learning)").get_xdata(), [2, 8, 1024])
    expected = np.array([1 / 3, 7 / 9, 1023 / 1025]) * 1.01  # (m - 1) / (m + 1), mean seed's factor
    np.testing.assert_allclose(_line(ax, "max estimator (Q-learning)").get_ydata(), expected)
    np.testing.assert_array_equal(_line(ax, "double estimator (Double Q-learning)").get_ydata(), [0.0, 0.0, 0.0])


def test_aggregate_intervals_plot_draws_each_ci_as_a_bar_and_the_estimate_as_a_tick():
    intervals = pd.DataFrame({"algo": ["dqn", "double_dqn"] * 2, "aggregate": ["iqm", "iqm", "mean", "mean"],
                              "estimate": [1.0, 2.0, 3.0, 4.0], "ci_low": [0.5, 1.5, 2.5, 3.5],
                              "ci_high": [1.5, 3.0, 3.5, 5.0]})
    fig = figures.aggregate_intervals_plot(intervals)
    iqm_ax, mean_ax = fig.axes
    assert [iqm_ax.get_title(), mean_ax.get_title()] == ["IQM", "Mean"]
    # Algorithms in name order, bottom to top: double_dqn, dqn, each by its reader's name.
    assert [t.get_text() for t in iqm_ax.get_yticklabels()] == ["Double DQN", "DQN"]
    assert [(p.get_x(), p.get_width()) for p in iqm_ax.patches] == [(1.5, 1.5), (0.5, 1.0)]
    np.testing.assert_array_equal(_line(mean_ax, "Double DQN").get_xdata(), [4.0, 4.0])
    assert fig.get_supxlabel() == "human normalized score"
    # the figure says what a bar and a tick are
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["95% stratified-bootstrap CI", "point estimate"]


def test_performance_profile_plot_draws_fraction_above_tau_with_its_band():
    profiles = pd.DataFrame({"algo": ["dqn"] * 3, "tau": [0.0, 1.0, 2.0], "fraction": [1.0, 0.5, 0.1],
                             "ci_low": [0.9, 0.3, 0.0], "ci_high": [1.0, 0.7, 0.2]})
    ax = figures.performance_profile_plot(profiles).axes[0]
    np.testing.assert_array_equal(_line(ax, "DQN").get_xdata(), [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(_line(ax, "DQN").get_ydata(), [1.0, 0.5, 0.1])
    assert _band_limits(ax.collections[0]) == (0.0, 1.0)
    assert ax.get_legend().get_title().get_text() == "95% stratified-bootstrap CI"


def test_figure_functions_name_what_is_missing():
    with pytest.raises(ValueError, match="no rows for metric 'q_error_max'"):
        figures.tabular_convergence(_rows("dqn", "E", 0, "eval_return", [0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="no column 'replay_size'"):
        figures.sensitivity(_rows("dqn", "E", 0, "eval_return", [0.0, 1.0, 2.0]), "replay_size")


def test_save_figure_writes_png_and_pdf_and_nothing_else(tmp_path, overestimation_table):
    png, pdf = figures.save_figure(figures.overestimation_curves(overestimation_table), tmp_path / "fig3")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig3.pdf", "fig3.png"]


def test_bias_figure_overlays_the_exact_expectation_and_bands_are_the_95_percent_ci_of_the_mean():
    parts = [_rows(estimator, "synthetic/noise-uniform", s, metric, [value], steps=[0], num_actions=m)
             for s in range(4) for m in (2, 8, 1024)
             for estimator, exact in [("max_estimator", (m - 1) / (m + 1)), ("double_estimator", 0.0)]
             for metric, value in [("estimation_bias", exact + 0.01 * s), ("exact_bias", exact)]]
    ax = figures.overestimation_bias(pd.concat(parts)).axes[0]
    theory = [line for line in ax.lines if line.get_linestyle() == "--"]
    # Double estimator (0) first, then the max estimator's (m - 1) / (m + 1); one legend entry for both.
    assert [line.get_label() for line in theory] == ["exact expectation", "_nolegend_"]
    np.testing.assert_allclose(theory[0].get_ydata(), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(theory[1].get_ydata(), [1 / 3, 7 / 9, 1023 / 1025])
    assert ax.get_xlabel() == "number of actions" and ax.get_xscale() == "log"
    # The band at m = 2 is the bootstrap CI of the mean of the four seeds' biases, no wider quantile band.
    values = np.array([1 / 3 + 0.01 * s for s in range(4)])
    centre, low, high = figures.mean_ci(values, "max_estimator|2")
    assert centre == pytest.approx(values.mean()) and low < centre < high
    assert high - low < values.max() - values.min()
