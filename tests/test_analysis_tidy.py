import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import reference, tidy


def _rows(algo, env, seed, metric, steps, values, **extra):
    return pd.DataFrame({
        "run_id": f"{algo}-{env}", "suite": "s", "algo": algo, "env": env, "protocol": "nature", "seed": seed,
        "step": steps, "frames": [4 * s for s in steps], "episodes": [s // 10 for s in steps],
        "metric": metric, "value": values, **extra,
    })


def _write_run(run_dir, metrics, status="complete", config=None, wall_time_s=10.0):
    run_dir.mkdir(parents=True)
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    # The layout experiments/cli.py writes.
    (run_dir / "run.json").write_text(json.dumps(
        {"run_id": run_dir.name, "status": status, "wall_time_s": wall_time_s, "git": {"commit": "abc"},
         "device": {"device": "cpu"}, "config": {"run": {"suite": "s"}, "algo_config": config or {}}}))


def test_load_runs_concatenates_metrics_and_attaches_status_and_config(tmp_path):
    _write_run(tmp_path / "a", _rows("dqn", "E", [0, 1], "eval_return", [0, 10], [1.0, 2.0]),
               config={"replay_size": 1000})
    _write_run(tmp_path / "b", _rows("dqn", "E", [0], "eval_return", [0], [3.0]), status="diverged",
               config={"replay_size": 10})
    df = tidy.load_runs([tmp_path / "a", tmp_path / "b"], config_keys=["algo_config.replay_size"])
    assert list(df.columns) == [*tidy.METRIC_COLUMNS, "status", "replay_size"]
    assert df["status"].tolist() == ["complete", "complete", "diverged"]
    assert df["replay_size"].tolist() == [1000, 1000, 10]
    info = tidy.run_info([tmp_path / "a", tmp_path / "b"])
    assert info["wall_time_s"].sum() == 20.0 and info["suite"].tolist() == ["s", "s"]
    assert info["git_commit"].tolist() == ["abc", "abc"] and info["config_hash"].isna().all()


def test_load_run_without_run_json_names_the_missing_file(tmp_path):
    (tmp_path / "r").mkdir()
    with pytest.raises(FileNotFoundError, match="run.json"):
        tidy.load_run(tmp_path / "r")


def test_write_table_writes_csv_and_parquet_and_leaves_no_temporary_files(tmp_path):
    df = _rows("dqn", "E", 0, "eval_return", [0, 10], [1.0, 2.0])
    csv, parquet = tidy.write_table(df, tmp_path / "out" / "tidy")
    pd.testing.assert_frame_equal(pd.read_csv(csv), df)
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), df)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tidy.csv", "tidy.parquet"]


def test_final_scores_average_the_last_evaluations_per_seed():
    df = pd.concat([_rows("dqn", "E", 0, "eval_return", [0, 10, 20, 30], [0.0, 1.0, 2.0, 4.0]),
                    _rows("dqn", "E", 1, "eval_return", [0, 10, 20, 30], [0.0, 0.0, 6.0, 8.0]),
                    _rows("dqn", "E", 1, "td_loss", [30], [99.0])])
    by_n = tidy.final_scores(df, last_n_evals=2)
    assert by_n["score"].tolist() == [3.0, 7.0]
    assert by_n[["step", "frames"]].values.tolist() == [[30, 120], [30, 120]]
    # The last half of 30 steps is steps >= 15: steps 20 and 30.
    by_fraction = tidy.final_scores(df, last_fraction=0.5)
    assert by_fraction["score"].tolist() == [3.0, 7.0] and by_fraction["n_obs"].tolist() == [2, 2]


def test_final_scores_drop_failed_runs_but_keep_diverged_ones():
    df = pd.concat([_rows("dqn", "E", 0, "eval_return", [0], [1.0], status="complete"),
                    _rows("dqn", "E", 1, "eval_return", [0], [-5.0], status="diverged"),
                    _rows("dqn", "E", 2, "eval_return", [0], [7.0], status="failed")])
    assert tidy.final_scores(df, last_n_evals=1)["seed"].tolist() == [0, 1]


def test_best_scores_count_episodes_to_within_5_percent_of_a_negative_best():
    # Best -1.0; within 5% means >= -1.05: first reached at step 20 (-1.04), 2 episodes in.
    df = _rows("naf", "Reacher-v5", 0, "eval_return", [0, 10, 20, 30], [-3.0, -1.2, -1.04, -1.0])
    best = tidy.best_scores(df)
    assert best.loc[0, "best"] == -1.0
    assert best.loc[0, "episodes_to_within"] == 2 and best.loc[0, "steps_to_within"] == 20


def test_score_matrix_is_runs_by_sorted_tasks_independent_of_row_order():
    scores = pd.DataFrame({"algo": ["b", "a", "a", "a", "a"], "env": ["X", "Y", "X", "X", "Y"],
                           "seed": [0, 1, 1, 0, 0], "score": [9.0, 4.0, 2.0, 1.0, 3.0]})
    matrices = tidy.score_matrix(scores[scores["algo"] == "a"].iloc[::-1])
    np.testing.assert_array_equal(matrices["a"], [[1.0, 3.0], [2.0, 4.0]])
    with pytest.raises(ValueError, match="no runs on env='Y'"):
        tidy.score_matrix(scores)


def test_human_normalized_scores_match_the_published_tables_and_name_the_table():
    scores = pd.DataFrame({"env": ["ALE/Pong-v5", "ALE/Pong-v5", "ALE/SpaceInvaders-v5"],
                           "score": [14.6, -20.7, 908.35]})
    zoo = tidy.human_normalized(scores)
    # DQN Zoo: Pong random -20.7, human 14.6; Space Invaders random 148.0, human 1668.7.
    np.testing.assert_allclose(zoo["score"], [1.0, 0.0, 0.5])
    assert set(zoo["human_table"]) == {"dqn_zoo"}
    # Mnih et al. 2015 human Pong score is 9.3, so the same raw score normalizes differently.
    mnih = tidy.human_normalized(scores.iloc[:1].assign(score=9.3), table=reference.MNIH2015)
    assert mnih.loc[0, "score"] == pytest.approx(1.0) and mnih.loc[0, "human_table"] == "mnih2015"
    with pytest.raises(ValueError, match="not in human table"):
        tidy.human_normalized(pd.DataFrame({"env": ["ALE/Alien-v5"], "score": [1.0]}), table="mnih2015")


def test_minatar_scores_normalize_between_the_random_policy_and_young_and_tian_dqn_at_5m_frames():
    anchors = reference.minatar_normalization().set_index("env")
    # Breakout: DQN's curve reads 10.06 at 5M frames (4,975,000, the last point of the figure)
    assert anchors.loc["MinAtar/Breakout-v0", "reference"] == 10.06
    assert (anchors["random"] < anchors["reference"]).all() and len(anchors) == 5
    random, top = anchors.loc["MinAtar/Breakout-v0", ["random", "reference"]]
    scores = pd.DataFrame({"env": "MinAtar/Breakout-v0", "score": [random, top, (random + top) / 2]})
    out = tidy.normalized(scores, reference.MINATAR_DQN5M)
    np.testing.assert_allclose(out["score"], [0.0, 1.0, 0.5])
    assert out["raw_score"].tolist() == scores["score"].tolist() and set(out["normalization"]) == {"minatar_dqn5m"}
    # Atari tables go through human_normalized, and the table is named either way
    atari = tidy.normalized(pd.DataFrame({"env": ["ALE/Pong-v5"], "score": [14.6]}), reference.DQN_ZOO)
    assert atari.loc[0, "score"] == pytest.approx(1.0) and atari.loc[0, "normalization"] == "dqn_zoo"
    with pytest.raises(ValueError, match=r"\['MinAtar/Breakout-v1'\] have no minatar_dqn5m normalization"):
        tidy.normalized(pd.DataFrame({"env": ["MinAtar/Breakout-v1"], "score": [1.0]}), reference.MINATAR_DQN5M)
    with pytest.raises(ValueError, match="unknown normalization 'human'; valid: dqn_zoo, mnih2015, minatar_dqn5m"):
        tidy.normalized(scores, "human")


def test_atari_game_key_maps_env_ids_onto_the_reference_names():
    keys = [reference.atari_game_key(e) for e in ("ALE/UpNDown-v5", "MontezumaRevengeNoFrameskip-v4")]
    assert keys == ["up_n_down", "montezuma_revenge"]
    assert set(keys) <= set(reference.human_random_scores()["game"])


def test_minatar_games_are_not_atari_games_for_any_atari_table():
    assert reference.is_atari("ALE/Breakout-v5") and reference.is_atari("BreakoutNoFrameskip-v4")
    assert not reference.is_atari("MinAtar/Breakout-v0")
    with pytest.raises(ValueError, match="not an Atari"):
        reference.atari_game_key("MinAtar/Breakout-v0")
    with pytest.raises(ValueError, match=r"\['MinAtar/Breakout-v0'\] are not Atari games"):
        tidy.human_normalized(pd.DataFrame({"env": ["MinAtar/Breakout-v0"], "score": [1.0]}))


def test_reference_loaders_cite_their_sources():
    assert reference.naf_vs_ddpg_table1().attrs["source"].startswith("Gu, Lillicrap")
    assert reference.ddqn_summary().shape == (4, 5)
    assert len(reference.human_random_scores()) == 57


def test_a_member_diverges_when_its_q_estimate_exceeds_twice_the_largest_possible_return():
    # CartPole rewards are at most 1 per step: with gamma 0.99 no Q exceeds 100, so the bound is 200.
    df = pd.DataFrame({"run_id": "r", "suite": "s", "algo": "dqn", "env": "CartPole-v1",
                       "seed": [0, 0, 1, 1, 2], "metric": "q_estimate",
                       "value": [50.0, 199.0, 80.0, 2.5e3, float("nan")]})
    config = pd.DataFrame({"run_id": ["r"], "gamma": [0.99], "clip_rewards": [False]})
    members = tidy.diverged_members(df, config)
    assert members["bound"].tolist() == pytest.approx([200.0] * 3)
    assert members["diverged"].tolist() == [False, True, True]  # a non-finite estimate has diverged too
    # The runner's own per-member flag counts where it is logged; tasks with unbounded rewards have no bound.
    flagged = pd.concat([df, df.iloc[:1].assign(metric="diverged", value=1.0)])
    assert tidy.diverged_members(flagged, config)["diverged"].tolist() == [True, True, True]
    assert math.isnan(tidy.q_bound("HalfCheetah-v5", 0.99)[0])
    assert tidy.q_bound("HalfCheetah-v5", 0.99, configured={"HalfCheetah-v5": 5e3}) == (5e3, "configured")
    assert tidy.q_bound("ALE/Pong-v5", 0.99, clip_rewards=True)[0] == pytest.approx(200.0)


def test_episodes_to_target_counts_a_run_that_never_reaches_it_at_its_last_episode():
    df = pd.DataFrame({"run_id": "r", "suite": "s", "algo": "a", "env": "T", "protocol": "p", "seed": [0, 0, 1, 1],
                       "step": [1, 2, 1, 2], "frames": [1, 2, 1, 2], "episodes": [3, 7, 4, 9],
                       "metric": "eval_return", "value": [5.0, 12.0, 5.0, 6.0], "status": "complete"})
    scores = tidy.episodes_to_target(df, "eval_return", {"T": 10.0})
    assert scores["score"].tolist() == [7.0, 9.0] and scores["reached"].tolist() == [True, False]


def _curve_reader():
    path = Path(__file__).resolve().parents[1] / "experiments" / "scripts" / "read_minatar_curves.py"
    spec = importlib.util.spec_from_file_location("read_minatar_curves", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_minatar_curve_reader_maps_a_drawn_dqn_line_to_its_return_through_the_panel_tick_marks(tmp_path):
    reader = _curve_reader()
    image = np.full((reader.SIZE[1], reader.SIZE[0], 3), 255, dtype=np.uint8)
    drawn = {}
    for env, ((left, right), ticks) in reader.PANELS.items():
        for row, _ in ticks:
            image[int(round(row)) - 1:int(round(row)) + 2, int(left) - 13:int(left) - 3] = 0
        (r0, v0), (r1, v1) = ticks[-2], ticks[-1]
        row = int(round((r0 + r1) / 2))  # halfway between the two lowest ticks
        drawn[env] = v1 + (v0 - v1) * (r1 - row) / (r1 - r0)
        image[row:row + 2, int(left):int(right)] = reader.DQN_COLOURS[1]
    Image.fromarray(image).save(tmp_path / "figure.png")
    assert reader.main([str(tmp_path / "figure.png"), str(tmp_path / "read.csv"), "--frames", "100000"]) == 0
    table = pd.read_csv(tmp_path / "read.csv").set_index("env")
    for env, value in drawn.items():
        if env == "MinAtar/Freeway-v0":
            # 2,500-frame episodes: the curve at 100k frames is the first 100 episodes' window filled back
            assert pd.isna(table.loc[env, "return"]) and "250,000 frames" in table.loc[env, "note"]
            continue
        pixel = (reader.PANELS[env][1][-2][1] - reader.PANELS[env][1][-1][1]) / 90  # a unit is ~90-117 px
        assert table.loc[env, "return"] == pytest.approx(value, abs=pixel), env

    Image.fromarray(np.full_like(image, 255)).save(tmp_path / "blank.png")
    with pytest.raises(SystemExit, match="no y tick mark"):
        reader.main([str(tmp_path / "blank.png"), str(tmp_path / "blank.csv")])
    assert not (tmp_path / "blank.csv").exists()
