"""What the continuous-action Q-learners share beyond Q-learning itself: their settings, acting in an action
box with exploration noise, and replay of continuous actions.

DDPG, NAF and sampled-max Q-learning differ only in how they take the max over actions (Levine, CS 285,
"Q-learning with continuous actions": stochastic optimization (sampled max, CEM), a Q-function that is easy to
maximize (NAF), a learned maximizer (DDPG)), that is, in their head (qlearning.Head). Each family is a
``ContinuousAgent`` that builds its head; Q-learning is qlearning.py's, exploration is ``NoisyGreedy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from algorithms.explore import GaussianNoise, OrnsteinUhlenbeckNoise
from algorithms.members import member_rand, torch_generators
from algorithms.qlearning import RENAMED, QAgent, QConfig, validate_q  # noqa: F401 - RENAMED: config.build

NOISES = ("ou", "gaussian")


@dataclass
class ContinuousConfig(QConfig):
    """Settings every continuous-action Q-learner shares; a family's Config adds its own and may change a
    default (citing its source)."""

    lr: float = 1e-3
    """Adam learning rate of the Q-function (Lillicrap et al. 2016, Sec. 7: 1e-3 for the critic)."""
    batch_size: int = 64
    """Minibatch size (Lillicrap et al. 2016, Sec. 7)."""
    replay_size: int = 1_000_000
    """Replay size in agent steps (Lillicrap et al. 2016, Sec. 7)."""
    learning_starts: int = 1_000
    """Agent steps of uniformly random actions before learning begins. Ours: Lillicrap et al. and Gu et al.
    learn from the first steps; TD3 (Fujimoto et al. 2018) starts with 1,000-10,000 random steps."""
    updates_per_step: float = 1.0
    """Gradient updates per agent step (Lillicrap et al. 2016: 1; Gu et al. 2016, Algorithm 1: I)."""
    target_period: int = 1
    """Gradient updates between target updates: after every update (Lillicrap et al. 2016, Sec. 7; Gu et al.
    2016, Algorithm 1)."""
    polyak_tau: float = 0.001
    """Target networks: target <- (1 - tau) target + tau online (Lillicrap et al. 2016, Sec. 7)."""
    loss: str = "mse"
    """The squared TD error (Lillicrap et al. 2016, Algorithm 1; Gu et al. 2016, Algorithm 1)."""
    noise: str = "ou"
    """Exploration noise added to the greedy action: ou (Ornstein-Uhlenbeck, Lillicrap et al. 2016, Sec. 7)
    or gaussian (independent per step)."""
    noise_sigma: float = 0.2
    """Noise scale in units of the action box's half-width (0.2: Lillicrap et al.'s OU sigma; Gu et al. 2016
    swept {0.1, 0.3, 1.0}). Scaling by the half-width is ours, so one value suits every box; on [-1, 1]
    (most MuJoCo tasks) it is the raw sigma."""
    ou_theta: float = 0.15
    """Mean reversion of the OU process per agent step (Lillicrap et al. 2016, Sec. 7)."""
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    """Hidden layer widths: "two layers of 200 rectified linear units" (Gu et al. 2016, Sec. 6)."""
    batch_norm: bool = False
    """Batch normalization of the state input and hidden layers. Off (ours): Lillicrap et al. 2016 used it on
    low-dimensional tasks; Gu et al. 2016 (Sec. 6) chose it per task in a sweep."""


def validate_common(cfg: ContinuousConfig) -> list[str]:
    """Problems with the shared settings, each naming the key and the valid values."""
    errors = validate_q(cfg)
    if cfg.noise not in NOISES:
        errors.append(f"noise={cfg.noise!r}: valid: {', '.join(NOISES)}")
    if cfg.noise_sigma < 0:
        errors.append(f"noise_sigma={cfg.noise_sigma}: must be >= 0")
    if not 0 < cfg.ou_theta < 2:
        errors.append(f"ou_theta={cfg.ou_theta}: must be in (0, 2) for a stationary process")
    if not cfg.hidden or min(cfg.hidden) <= 0:
        errors.append(f"hidden={cfg.hidden}: give at least one layer width, all > 0")
    return errors


class NoisyGreedy:
    """Uniform actions in the box before learning starts, then the greedy action plus exploration noise,
    clipped to the box (Lillicrap et al. 2016, Algorithm 1; Gu et al. 2016, Algorithm 1); the greedy action
    without noise in evaluation."""

    def __init__(self, agent: ContinuousAgent):
        cfg = agent.cfg
        gens = agent.streams["noise"]
        if cfg.noise == "ou":
            self.noise = OrnsteinUhlenbeckNoise(gens, agent.action_dim, theta=cfg.ou_theta, sigma=cfg.noise_sigma)
        else:
            self.noise = GaussianNoise(gens, agent.action_dim, sigma=cfg.noise_sigma)
        self.last_noise: torch.Tensor | None = None  # N_t of the last training action [M, du], None if uniform

    @torch.no_grad()
    def act(self, agent: ContinuousAgent, obs: torch.Tensor, step: int) -> np.ndarray:
        if step < agent.cfg.learning_starts:
            self.last_noise = None
            u = member_rand(agent.streams["act"], (agent.action_dim,), "cpu")
            return (agent.low + (agent.high - agent.low) * u).numpy()
        mu = agent.greedy(obs.unsqueeze(1), agent.streams["act"])[:, 0].cpu()
        self.last_noise = self.noise.sample()
        return agent.clip(mu + agent.half_range * self.last_noise).numpy()

    @torch.no_grad()
    def act_eval(self, agent: ContinuousAgent, obs: torch.Tensor, gens) -> np.ndarray:
        return agent.greedy(obs.unsqueeze(1), gens)[:, 0].cpu().numpy()

    def end_episodes(self, mask) -> None:
        """Restart the noise process of the members whose episode ended."""
        self.noise.reset(torch.as_tensor(mask))

    def state_dict(self) -> dict:
        return {"noise": getattr(self.noise, "state", None)}

    def load_state_dict(self, state: dict) -> None:
        if state["noise"] is not None:
            self.noise.state = state["noise"].clone()


class ContinuousAgent(QAgent):
    """Q-learning for M members in a box of continuous actions: a family supplies ``make_head``."""

    def __init__(self, cfg: ContinuousConfig, obs_shape: Sequence[int], frame_stack: int, action_space,
                 seeds: Sequence[int], total_steps: int, device: torch.device | str = "cpu"):
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"{type(self).__name__} needs a Box of continuous actions, got {action_space}")
        if len(obs_shape) != 1 or frame_stack != 1:
            raise ValueError(f"{type(self).__name__} needs state-vector observations, got shape {tuple(obs_shape)} "
                             f"with a stack of {frame_stack}")
        self.obs_dim, self.action_dim = int(obs_shape[0]), int(action_space.shape[0])
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32)
        self.half_range = (self.high - self.low) / 2
        super().__init__(cfg, obs_shape, frame_stack, action_space, seeds, total_steps, device)
        self.streams["noise"] = torch_generators(seeds, "noise")
        self.explorer = NoisyGreedy(self)

    def action_spec(self):
        return (self.action_dim,), torch.float32

    def clip(self, u: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(u, self.high), self.low)
