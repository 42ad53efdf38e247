"""The MinAtar member environment: frame format, protocol settings, seeding, member independence, sticky actions,
checkpoint round trips, and agreement with the package's own gymnasium environments.

Under random play a MinAtar game lasts tens of steps (Freeway: 2,500), so whole games fit in a test. Actions come
from fixed generators so every run here is reproducible.
"""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
import torch

from envs.minatar import ENV_IDS, GAMES, MinAtarMemberEnv, make_minatar
from envs.registry import EnvError, env_family, known_envs, make_env
from experiments.config import build
from experiments.runner import Runner

ROOT = Path(__file__).resolve().parents[1]

# Channels per game: minatar's state_shape(); the same numbers are Revisiting Rainbow's gin constants
# (minatar_env.py: ASTERIX_SHAPE (10, 10, 4), ... SPACE_INVADERS_SHAPE (10, 10, 6)).
CHANNELS = {"Asterix": 4, "Breakout": 4, "Freeway": 7, "Seaquest": 10, "SpaceInvaders": 6}
# Minimal action sets from each game's minimal_action_set() (action_map n, l, u, r, d, f)
MINIMAL_ACTIONS = {"Asterix": 5, "Breakout": 3, "Freeway": 3, "Seaquest": 6, "SpaceInvaders": 4}


def play(env: MinAtarMemberEnv, actions: np.ndarray) -> tuple[np.ndarray, list]:
    """Reset, then one Step per row of actions [T, M]; returns the first observation and the steps."""
    first = env.reset()
    return first, [env.step(a) for a in actions]


def random_actions(env: MinAtarMemberEnv, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, env.action_space.n, (steps, env.num_members))


def trajectory(first: np.ndarray, steps: list) -> dict[str, np.ndarray]:
    return {"obs": np.stack([first, *(s.obs for s in steps)]), "final_obs": np.stack([s.final_obs for s in steps]),
            "reward": np.stack([s.reward for s in steps]), "terminated": np.stack([s.terminated for s in steps])}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("game", CHANNELS)
def test_registry_builds_channel_first_uint8_frames_with_the_game_channels_and_both_action_sets(game):
    full = make_env(f"MinAtar/{game}-v0", [0, 1], "train")
    minimal = make_env(f"MinAtar/{game}-v1", [0], "eval")
    assert isinstance(full, MinAtarMemberEnv) and full.protocol == minimal.protocol == "minatar"
    assert env_family(f"MinAtar/{game}-v0") == "minatar"
    assert full.frame_stack == 1 and full.frames_per_step == 1
    assert full.observation_space.shape == (CHANNELS[game], 10, 10) and full.observation_space.dtype == np.uint8
    assert full.action_space.n == 6 and minimal.action_space.n == MINIMAL_ACTIONS[game]
    obs = full.reset()
    assert obs.shape == (2, CHANNELS[game], 10, 10) and obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    res = full.step(np.zeros(2, dtype=np.int64))
    assert res.obs.shape == res.final_obs.shape == obs.shape
    assert res.reward.dtype == np.float32 and res.terminated.dtype == res.truncated.dtype == np.bool_


def test_settings_record_every_protocol_value_explicitly():
    s = make_env("MinAtar/Breakout-v1", [3]).settings
    assert s["protocol"] == "minatar" and s["sticky_action_prob"] == 0.1 and s["difficulty_ramping"] is True
    assert s["max_episode_steps"] is None and s["action_set"] == "minimal" and s["game_actions"] == [0, 1, 3]
    assert s["frame_shape"] == [4, 10, 10] and s["frames_per_step"] == 1 and s["game"] == "breakout"
    assert make_env("MinAtar/Breakout-v0", [3]).settings["game_actions"] == [0, 1, 2, 3, 4, 5]


@pytest.mark.filterwarnings("ignore:.*is out of date:DeprecationWarning")  # gymnasium on v0 ids; v0 is wanted
@pytest.mark.parametrize("env_id", ["MinAtar/Breakout-v0", "MinAtar/Seaquest-v1"])
def test_frames_equal_the_package_gymnasium_env_transposed_to_channels_first(env_id):
    """The package's own gymnasium env with the same seed (its defaults are sticky 0.1 and ramping on, the
    protocol's values) must see the same games: same frames in [10, 10, C], same rewards, same ends."""
    from minatar.gym import register_envs

    if env_id not in gym.registry:
        register_envs()
    ours = make_minatar(env_id, [11])
    ref = gym.make(env_id, disable_env_checker=True)
    actions = random_actions(ours, 300, seed=5)
    first, steps = play(ours, actions)
    ref_obs = ref.reset(seed=11)[0]
    np.testing.assert_array_equal(first[0], ref_obs.transpose(2, 0, 1))
    for a, s in zip(actions[:, 0], steps, strict=True):
        o, r, term, trunc, _ = ref.step(int(a))
        np.testing.assert_array_equal(s.final_obs[0], o.transpose(2, 0, 1))
        assert (s.reward[0], s.terminated[0], s.truncated[0]) == (r, term, trunc)
        if term:
            o = ref.reset()[0]
        np.testing.assert_array_equal(s.obs[0], o.transpose(2, 0, 1))
    assert any(s.terminated[0] for s in steps)  # the comparison crossed at least one game end


@pytest.mark.parametrize("game", CHANNELS)
def test_same_seeds_and_actions_give_identical_trajectories_and_other_seeds_do_not(game):
    env_id = f"MinAtar/{game}-v0"
    actions = random_actions(make_minatar(env_id, [0, 1]), 400, seed=1)
    a = trajectory(*play(make_minatar(env_id, [0, 1]), actions))
    b = trajectory(*play(make_minatar(env_id, [0, 1]), actions))
    assert_same(a, b)
    env = make_minatar(env_id, [0, 1])
    play(env, actions)
    assert_same(a, trajectory(*play(env, actions)))  # reset() reseeds: the second pass replays the first
    c = trajectory(*play(make_minatar(env_id, [7, 8]), actions))
    assert not np.array_equal(a["obs"], c["obs"])


@pytest.mark.parametrize("env_id", ["MinAtar/Asterix-v0", "MinAtar/SpaceInvaders-v1"])
def test_member_k_of_m_follows_the_single_member_run_with_seed_k(env_id):
    seeds = [4, 9, 2]
    env = make_minatar(env_id, seeds)
    actions = random_actions(env, 500, seed=3)
    together = trajectory(*play(env, actions))
    for k, s in enumerate(seeds):
        alone = trajectory(*play(make_minatar(env_id, [s]), actions[:, k:k + 1]))
        assert_same({key: v[:, k:k + 1] for key, v in together.items()}, alone)


def test_finished_reports_each_game_return_and_length_in_agent_steps():
    env = make_minatar("MinAtar/Breakout-v0", [0, 1])
    _, steps = play(env, random_actions(env, 600, seed=2))
    for k in range(2):
        ends = [t for t, s in enumerate(steps) if s.terminated[k]]
        reported = [f[1:] for s in steps for f in s.finished if f[0] == k]
        starts = [0] + [t + 1 for t in ends[:-1]]
        expected = [(float(sum(steps[t].reward[k] for t in range(a, b + 1))), b + 1 - a)
                    for a, b in zip(starts, ends, strict=True)]
        assert len(ends) >= 3 and reported == expected
        assert not any(s.truncated[k] for s in steps)  # no episode cap under the minatar protocol


def test_sticky_actions_repeat_the_previous_applied_action_at_rate_one_tenth():
    """Each step asks for an action other than the one last applied, so the step repeated iff the applied
    action (the package's last_action) differs from the request. 20,000 draws of Bernoulli(0.1): standard
    error 0.0021; the tolerance is 4.5 of them."""
    env = make_minatar("MinAtar/Seaquest-v0", [0, 1, 2, 3])
    env.reset()
    rng = np.random.default_rng(0)
    repeats, n = 0, 0
    for _ in range(5000):
        last = np.array([g.last_action for g in env.games])
        asked = (last + rng.integers(1, 6, env.num_members)) % 6
        env.step(asked)
        applied = np.array([g.last_action for g in env.games])
        assert np.all((applied == asked) | (applied == last))
        repeats += int(np.sum(applied != asked))
        n += env.num_members
    assert abs(repeats / n - 0.1) < 4.5 * np.sqrt(0.1 * 0.9 / n)


@pytest.mark.parametrize("game", CHANNELS)
def test_checkpoint_round_trip_continues_the_very_same_games(game):
    """state_dict after t steps, saved and loaded with weights_only=True into a fresh env, then the same actions:
    the same frames, rewards and game ends as the uninterrupted run, including games that end after the cut."""
    env_id = f"MinAtar/{game}-v0"
    env = make_minatar(env_id, [5, 6])
    actions = random_actions(env, 400, seed=4)
    whole = trajectory(*play(env, actions))
    cut = 137
    first, before = play(env := make_minatar(env_id, [5, 6]), actions[:cut])
    buf = io.BytesIO()
    torch.save({"env": env.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["env"]
    resumed = make_minatar(env_id, [5, 6])
    resumed.reset()
    resumed.load_state_dict(state)
    after = [resumed.step(a) for a in actions[cut:]]
    assert_same(whole, trajectory(first, before + after))
    finished_whole = [f for s in play(make_minatar(env_id, [5, 6]), actions)[1] for f in s.finished]
    assert finished_whole == [f for s in before + after for f in s.finished]  # returns and lengths carry over


def test_state_of_another_env_is_refused():
    state = make_minatar("MinAtar/Breakout-v0", [0]).state_dict()
    with pytest.raises(ValueError, match="cannot be loaded"):
        make_minatar("MinAtar/Asterix-v0", [0]).load_state_dict(state)


def test_bad_ids_and_protocols_name_the_valid_choices():
    assert set(ENV_IDS) <= set(known_envs()) and len(ENV_IDS) == 10
    with pytest.raises(EnvError, match="MinAtar/Breakout-v0"):
        make_env("MinAtar/Pong-v0", [0])
    with pytest.raises(EnvError, match="MinAtar/Breakout-v1"):
        env_family("MinAtar/Breakout-v2")
    with pytest.raises(EnvError, match="valid: minatar"):
        make_env("MinAtar/Breakout-v0", [0], protocol="nature")
    with pytest.raises(ValueError, match="seeds"):
        make_minatar("MinAtar/Breakout-v0", [-1])


@pytest.mark.slow
def test_a_run_resumed_from_a_checkpoint_writes_the_rows_of_the_uninterrupted_run():
    """The runner's resume path on MinAtar: the environment state in the checkpoint lets the resumed run play the
    same games, so every metric row (returns, losses, evaluations) matches the run that was never stopped."""
    sets = ["learning_starts=100", "batch_size=16", "eval_period=300", "eval_episodes=2", "eval_max_steps=500",
            "checkpoint_period=200", "log_period=100", "threads=1"]
    cfg = build("dqn", "MinAtar/Breakout-v0", [0, 1], 600, sets)
    saved = []
    for kind, state in Runner(cfg, torch.device("cpu")).train(None):
        buf = io.BytesIO()
        torch.save(state, buf)
        saved.append((kind, state["step"], buf.getvalue()))
    (_, cut, blob), *_ = [s for s in saved if s[0] == "checkpoint"]
    assert 0 < cut < 600
    state = torch.load(io.BytesIO(blob), weights_only=True)
    assert "env" in state and state["env"] is not None
    *_, (_, resumed) = Runner(cfg, torch.device("cpu")).train(state)
    whole = torch.load(io.BytesIO(saved[-1][2]), weights_only=True)

    def rows(s):
        return [r for r in s["rows"] if r[9] != "steps_per_second"]

    assert rows(resumed) == rows(whole) and any(r[9] == "train_return" for r in rows(whole))


def test_random_score_script_measures_every_game_under_the_protocol_and_rejects_too_few_episodes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("minatar_random_scores",
                                                  ROOT / "experiments" / "scripts" / "minatar_random_scores.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    out = tmp_path / "random.csv"
    assert script.main(["--episodes", "3", "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert table["env"].tolist() == [f"MinAtar/{game}-v0" for game in GAMES]
    assert (table["episodes"] == 3).all() and (table["random"] >= 0).all() and table["commit"].notna().all()
    # the same games and policy stream give the same returns
    assert script.random_returns("MinAtar/Breakout-v0", 3) == script.random_returns("MinAtar/Breakout-v0", 3)
    assert script.main(["--episodes", "1", "--out", str(tmp_path / "none.csv")]) == 2
    assert "--episodes 1: need at least 2" in capsys.readouterr().err and not (tmp_path / "none.csv").exists()
