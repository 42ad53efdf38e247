"""True values for the overestimation diagnostic follow the episodes the Q-function learns (issue 9, item 3)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import experiments.runner as runner_mod
from algorithms.agent import Agent
from envs.base import MemberEnv, Step
from experiments.config import build
from experiments.runner import Runner

GAMMA = 0.99  # DQN's default discount (Mnih et al. 2015)


class ScriptedLives(MemberEnv):
    """Reward 1 every step; a life is lost every ``life_steps`` steps; game over after ``lives`` lives, or a
    time-limit truncation after ``limit`` steps. Observations count the steps of the game."""

    def __init__(self, members: int, life_steps: int, lives: int, limit: int):
        self.num_members, self.life_steps, self.lives, self.limit = members, life_steps, lives, limit
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.t = np.zeros(members, dtype=np.int64)

    def reset(self) -> np.ndarray:
        self.t[:] = 0
        return self.t[:, None].astype(np.float32)

    def step(self, actions: np.ndarray) -> Step:
        self.t += 1
        life_lost = self.t % self.life_steps == 0
        game_over = self.t >= self.life_steps * self.lives
        truncated = ~game_over & (self.t >= self.limit)
        final = self.t[:, None].astype(np.float32)
        ended = game_over | truncated
        finished = [(k, float(self.t[k]), int(self.t[k])) for k in np.flatnonzero(ended)]
        self.t[ended] = 0
        return Step(self.t[:, None].astype(np.float32), np.ones(self.num_members, np.float32), game_over.copy(),
                    truncated, final, finished, life_lost=life_lost & ~game_over)


class ConstantQ(Agent):
    """Evaluation stand-in (one healthy member): acts 0, estimates max_a Q = value everywhere."""

    def __init__(self, value: float):
        self.value = value
        self.diverged = torch.zeros(1, dtype=torch.bool)

    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.full(obs.shape[:2], self.value)

    def act_eval(self, obs, generators) -> np.ndarray:
        return np.zeros(obs.shape[0], dtype=np.int64)


def _evaluate(monkeypatch, env: ScriptedLives, q: float):
    cfg = build("dqn", "CartPole-v1", [0], 100, ["eval_episodes=1"])
    runner = Runner(cfg, torch.device("cpu"))
    runner.env.close()
    runner.agent, runner.frame_stack = ConstantQ(q), 1
    monkeypatch.setattr(runner_mod, "make_env", lambda *args, **kwargs: env)
    return runner.evaluate(100)


def _segment_values(length: int) -> list[float]:
    return [sum(GAMMA**i for i in range(length - t)) for t in range(length)]


def test_true_value_stops_at_each_lost_life_and_true_value_game_runs_to_game_over(monkeypatch):
    ev = _evaluate(monkeypatch, ScriptedLives(1, life_steps=3, lives=3, limit=1000), q=0.0)
    assert ev.returns == [[9.0]] and len(ev.q_estimates[0]) == 9
    assert ev.true_values[0] == pytest.approx(_segment_values(3) * 3, rel=1e-12)
    assert ev.true_values_game[0] == pytest.approx(_segment_values(9), rel=1e-12)


def test_true_value_bootstraps_from_q_of_the_final_state_at_a_time_limit(monkeypatch):
    # 2 steps of the second life are played before the cut at step 5; Q = 7 at the final state.
    ev = _evaluate(monkeypatch, ScriptedLives(1, life_steps=3, lives=3, limit=5), q=7.0)
    cut = [1 + GAMMA * (1 + GAMMA * 7.0), 1 + GAMMA * 7.0]
    assert ev.true_values[0] == pytest.approx(_segment_values(3) + cut, rel=1e-12)
    assert ev.true_values_game[0] == pytest.approx(_segment_values(5), rel=1e-12)
