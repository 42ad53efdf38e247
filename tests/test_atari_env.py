"""The Atari member environment: frame format, protocol settings, life loss, the frame cap, member independence.

Breakout is the game with lives: under random play a game lasts a few hundred agent steps, so whole games
fit in a test. Actions come from fixed generators so every run here is reproducible.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.atari import AtariMemberEnv, make_atari
from envs.registry import EnvError, make_env

BREAKOUT_LIVES = 5


def play(env: AtariMemberEnv, actions: np.ndarray) -> list:
    """Reset, then one Step per row of actions [T, M]."""
    env.reset()
    return [env.step(a) for a in actions]


def random_actions(env: AtariMemberEnv, steps: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, env.action_space.n, (steps, env.num_members))


def test_registry_builds_single_uint8_frames_with_frame_stack_and_frames_per_step():
    env = make_env("ALE/Pong-v5", [0, 1], "train")
    try:
        assert isinstance(env, AtariMemberEnv) and env.protocol == "nature"
        assert env.num_members == 2 and env.frame_stack == 4 and env.frames_per_step == 4
        assert env.observation_space.shape == (84, 84) and env.observation_space.dtype == np.uint8
        assert env.action_space.n == 6  # Pong's minimal action set, not the full 18
        obs = env.reset()
        assert obs.shape == (2, 84, 84) and obs.dtype == np.uint8
        res = env.step(np.zeros(2, dtype=np.int64))
        assert res.obs.shape == res.final_obs.shape == (2, 84, 84) and res.obs.dtype == np.uint8
        assert res.reward.dtype == np.float32 and res.terminated.dtype == res.truncated.dtype == np.bool_
    finally:
        env.close()
    env.close()  # closing twice is harmless


@pytest.mark.parametrize(("protocol", "sticky", "noop_max", "actions"),
                         [("nature", 0.0, 30, 6), ("machado", 0.25, 0, 18)])
def test_protocol_settings_are_passed_to_ale_explicitly(protocol, sticky, noop_max, actions):
    env = make_atari("ALE/Pong-v5", [0], protocol, "train")
    env.close()
    s = env.settings
    assert s["repeat_action_probability"] == sticky and s["noop_max"] == noop_max
    assert s["life_loss_ends_episode"] == (protocol == "nature")
    assert s["full_action_space"] is (protocol == "machado") and env.action_space.n == actions
    assert s["reward_clipping"] is False and s["use_fire_reset"] is False
    assert (s["frameskip"], s["maxpool"], s["grayscale"], s["img_height"], s["img_width"]) == (4, True, True, 84, 84)
    assert s["max_episode_frames"] == 108_000 and s["stack_num"] == 1


def test_machado_randomness_comes_from_sticky_actions_alone():
    """No no-op starts: two seeds start on the same frame; sticky actions then make them diverge."""
    env = make_atari("ALE/Breakout-v5", [1, 2], "machado", "train")
    try:
        first = env.reset()
        assert np.array_equal(first[0], first[1])
        actions = np.repeat(np.arange(200)[:, None] % env.action_space.n, 2, axis=1)
        steps = [env.step(a) for a in actions]
        assert any(not np.array_equal(s.obs[0], s.obs[1]) for s in steps)
    finally:
        env.close()


def test_nature_training_life_loss_terminates_without_resetting_the_game_and_eval_ignores_it():
    train = make_atari("ALE/Breakout-v5", [3], "nature", "train")
    evaluation = make_atari("ALE/Breakout-v5", [3], "nature", "eval")
    actions = random_actions(train, 1500, seed=0)
    try:
        tr, ev = play(train, actions), play(evaluation, actions)
    finally:
        train.close()
        evaluation.close()
    game_end = next(t for t, s in enumerate(tr) if s.finished)
    game = tr[: game_end + 1]
    # The same emulator settings: identical frames and rewards, only the learning signal differs.
    assert all(np.array_equal(a.obs, b.obs) and np.array_equal(a.reward, b.reward) for a, b in zip(tr, ev, strict=True))
    life_losses = [t for t, s in enumerate(game[:-1]) if s.terminated[0]]
    assert len(life_losses) == BREAKOUT_LIVES - 1
    for t in life_losses:
        assert not tr[t].finished and not ev[t].terminated[0]
        assert np.array_equal(tr[t].final_obs, tr[t].obs)  # the game goes on from the frame it lost the life on
    assert game[-1].terminated[0] and ev[game_end].terminated[0]
    assert [s.terminated[0] for s in ev[:game_end]] == [False] * game_end
    (member, ret, length), = game[-1].finished
    assert (member, length) == (0, game_end + 1)
    assert ret == pytest.approx(sum(float(s.reward[0]) for s in game))  # raw rewards summed over all lives
    assert ev[game_end].finished == game[-1].finished
    # evaluation still reports the lost lives, so true values can follow the learner's episodes
    assert [t for t, s in enumerate(ev[:game_end]) if s.life_lost[0]] == life_losses


def test_machado_reports_no_life_loss_signal():
    env = make_atari("ALE/Breakout-v5", [3], "machado", "eval")
    try:
        steps = play(env, random_actions(env, 300, seed=0))
    finally:
        env.close()
    assert all(s.life_lost is None for s in steps)


def test_frame_cap_truncates_with_the_true_last_frame_then_starts_a_new_game():
    """A cap of 100 frames is 25 agent steps; the truncated step's final_obs is the frame an uncapped run shows."""
    actions = np.tile(np.arange(4), 13)[:, None]  # 52 steps, no game over this early under this cycle
    capped = make_atari("ALE/Breakout-v5", [4], "machado", "train", max_episode_frames=100)
    uncapped = make_atari("ALE/Breakout-v5", [4], "machado", "train")
    try:
        cap, free = play(capped, actions), play(uncapped, actions)
    finally:
        capped.close()
        uncapped.close()
    assert not any(s.episode_end[0] for s in free)
    ends = [t for t, s in enumerate(cap) if s.episode_end[0]]
    assert ends == [24, 49]
    for t in ends:
        assert cap[t].truncated[0] and not cap[t].terminated[0]
        assert cap[t].finished == [(0, sum(float(s.reward[0]) for s in cap[t - 24: t + 1]), 25)]
    assert np.array_equal(cap[24].final_obs, free[24].obs)
    assert all(np.array_equal(a.obs, b.obs) for a, b in zip(cap[:24], free[:24], strict=True))
    assert not np.array_equal(cap[24].obs, free[24].obs)  # a new game began


@pytest.mark.parametrize("protocol", ["nature", "machado"])
def test_member_trajectory_depends_only_on_its_own_seed_and_actions(protocol):
    """Member 1 of seeds [5, 7] plays exactly as seed 7 alone, whatever member 0 does (a game ends in between)."""
    steps = 400
    pair = make_atari("ALE/Breakout-v5", [5, 7], protocol, "train", max_episode_frames=800)
    alone = make_atari("ALE/Breakout-v5", [7], protocol, "train", max_episode_frames=800)
    mine = random_actions(alone, steps, seed=1)
    both = np.concatenate([random_actions(alone, steps, seed=2), mine], axis=1)
    try:
        a, b = play(pair, both), play(alone, mine)
    finally:
        pair.close()
        alone.close()
    assert any(s.finished for s in b)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.obs[1], y.obs[0]) and np.array_equal(x.final_obs[1], y.final_obs[0])
        assert (x.reward[1], x.terminated[1], x.truncated[1]) == (y.reward[0], y.terminated[0], y.truncated[0])
        assert [f[1:] for f in x.finished if f[0] == 1] == [f[1:] for f in y.finished]


def test_unknown_game_raises_env_error_that_says_how_to_list_games():
    with pytest.raises(EnvError, match=r"get_all_rom_ids.*"):
        make_env("ALE/NotAGame-v5", [0])
    with pytest.raises(EnvError, match="did you mean Pong"):
        make_atari("ALE/Pongg-v5", [0], "nature", "train")
    with pytest.raises(EnvError, match="ALE/<Game>-v5"):
        make_atari("ALE/Pong-v4", [0], "nature", "train")


def test_seeds_ale_cannot_take_are_rejected():
    with pytest.raises(ValueError, match="seeds must lie"):
        make_atari("ALE/Pong-v5", [2**40], "nature", "train")


@pytest.mark.parametrize(("protocol", "eval_frames"), [("nature", 18_000), ("machado", 108_000)])
def test_evaluation_episode_cap_is_the_protocols_and_training_keeps_108k_frames(protocol, eval_frames):
    # Mnih et al. 2015 and van Hasselt et al. 2016: 5 minutes of play; Machado et al. 2018: 30 minutes.
    for mode, frames in (("eval", eval_frames), ("train", 108_000)):
        env = make_env("ALE/Breakout-v5", [0], mode, protocol)
        env.close()
        assert env.settings["max_episode_frames"] == frames
        assert env.settings["eval_max_episode_frames"] == eval_frames


def test_nature_evaluation_truncates_a_game_that_never_ends_at_4500_agent_steps():
    env = make_env("ALE/Breakout-v5", [0], "eval", "nature")
    try:
        # Breakout never launches the ball without FIRE, so NOOP play lasts until the cap.
        results = play(env, np.zeros((4_500, 1), dtype=np.int64))
    finally:
        env.close()
    ends = [t for t, r in enumerate(results, 1) if r.episode_end[0]]
    assert ends == [4_500] and results[-1].truncated[0] and not results[-1].terminated[0]
    assert results[-1].finished == [(0, 0.0, 4_500)]
