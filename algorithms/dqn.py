"""DQN and its discrete-action variants, for M members at once.

DQN (Mnih et al. 2015, Nature, Algorithm 1): Q-learning with a deep network, experience replay, a target
network, reward clipping and an error clipped to [-1, 1] (the Huber loss). Each variant is a flag here:
- ``double`` (van Hasselt, Guez, Silver 2016): the online network picks the next action, the target
  network evaluates it: y = r + gamma Q(s', argmax_a Q(s', a; theta); theta^-).
- ``dueling`` (Wang et al. 2016): value and advantage streams, Q = V + A - mean A.
- ``n_step`` (Sutton 1988; Hessel et al. 2018): bootstrap from n steps ahead.
- ``sampler`` = proportional | rank (Schaul et al. 2016): prioritized replay with importance weights whose
  exponent beta is annealed from ``per_beta0`` to 1 over training.
- ``loss`` = huber | mse; ``polyak_tau`` < 1 turns the periodic hard copy into Polyak averaging
  (Lillicrap et al. 2016); ``optimizer`` = rmsprop (Nature) | adam.
Defaults are the Nature settings for Atari (Extended Data Table 1); ``PRESETS`` gives the settings used on
small environments, where Nature's budgets make no sense. Q-learning itself (targets, loss, replay, target
updates) is qlearning.py's, shared with the continuous families; this file is the discrete head and
epsilon-greedy exploration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from algorithms.members import UniformBlocks, batch_members, member_rand
from algorithms.networks import make_q_network
from algorithms.qlearning import (  # noqa: F401 - td_targets and td_loss are part of this family's interface
    RENAMED,
    Head,
    QAgent,
    QConfig,
    td_loss,
    td_targets,
    validate_q,
)
from algorithms.replay import anneal


@dataclass
class DQNConfig(QConfig):
    """DQN hyperparameters. Defaults: Mnih et al. 2015, Extended Data Table 1, unless a comment says otherwise."""

    lr: float = 2.5e-4
    """Learning rate."""
    optimizer: str = "rmsprop"
    """rmsprop (Nature's: centered, eps inside the square root), rmsprop_torch (torch's) or adam (Kingma & Ba
    2015; Hessel et al. 2018 use it for Rainbow)."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Hessel et al. 2018)."""
    batch_size: int = 32
    """Minibatch size."""
    learning_starts: int = 50_000
    """Replay start size: agent steps of uniform-random acting before learning begins."""
    updates_per_step: float = 0.25
    """Gradient updates per agent step: Nature's update frequency of 4 agent steps."""
    target_period: int = 2_500
    """Gradient updates between target updates: Nature's 10,000 agent steps at one update every 4 steps
    (their published code counts agent steps)."""
    loss: str = "huber"
    """huber (Nature's error clipping to [-1, 1]) or mse."""
    clip_rewards: bool = True
    """Clip training rewards to [-1, 1] (Nature); evaluation returns are always raw."""
    eps_start: float = 1.0
    """Initial exploration epsilon."""
    eps_end: float = 0.1
    """Final exploration epsilon."""
    eps_decay_steps: int = 1_000_000
    """Agent steps over which epsilon is annealed linearly ('final exploration frame' in Nature)."""
    eval_eps: float = 0.05
    """Epsilon of the evaluation policy (Nature)."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths for state-vector inputs (ours); pixels always get the Nature CNN."""
    dueling: bool = False
    """Dueling architecture (Wang et al. 2016)."""


# Settings for environments other than Atari. Ours: chosen so that DQN learns these tasks on a CPU in
# minutes; CleanRL's CartPole settings (Huang et al. 2022) were the starting point.
PRESETS: dict[str, dict] = {
    "classic": dict(optimizer="adam", lr=1e-3, adam_eps=1e-8, batch_size=64, replay_size=50_000,
                    learning_starts=1_000, updates_per_step=1.0, target_period=500, eps_end=0.05,
                    eps_decay_steps=10_000, eval_eps=0.0, clip_rewards=False, hidden=[64, 64]),
    "toy": dict(optimizer="adam", lr=1e-3, adam_eps=1e-8, batch_size=32, replay_size=10_000, learning_starts=500,
                updates_per_step=1.0, target_period=200, eps_end=0.1, eps_decay_steps=2_000, eval_eps=0.0,
                clip_rewards=False, hidden=[32]),
}
PRESETS["mujoco"] = PRESETS["classic"]
# MinAtar: Young & Tian 2019's DQN, from their published examples/dqn.py (values, file and line in
# analysis/reference/minatar_dqn_young2019.csv): torch's centered RMSprop (eps outside the square root, as they
# ran it), replay 100k, batch 32, one update per frame after 5,000 frames, target copied every 1,000 updates,
# epsilon 1 -> 0.1 over the next 100k frames, Huber loss, no reward clipping. The evaluation epsilon (0.05,
# Nature's) is ours: they report training returns, which every run logs too (train_return).
PRESETS["minatar"] = dict(optimizer="rmsprop_torch", lr=2.5e-4, rmsprop_alpha=0.95, rmsprop_eps=0.01,
                          rmsprop_centered=True, batch_size=32, replay_size=100_000, learning_starts=5_000,
                          updates_per_step=1.0, target_period=1_000, eps_start=1.0, eps_end=0.1,
                          eps_decay_steps=100_000, eval_eps=0.05, loss="huber", clip_rewards=False)


def validate(cfg: DQNConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_q(cfg)
    if cfg.eps_decay_steps < 0:
        errors.append(f"eps_decay_steps={cfg.eps_decay_steps}: must be >= 0")
    for key in ("eps_start", "eps_end", "eval_eps"):
        if not 0 <= getattr(cfg, key) <= 1:
            errors.append(f"{key}={getattr(cfg, key)}: must be in [0, 1]")
    return errors


class DiscreteHead(Head):
    """Q-values of every action from one member-batched network: q, greedy and max by indexing."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def q(self, obs, action):
        return self.net(obs).gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def greedy(self, obs, gens=None):
        return self.net(obs).argmax(-1)

    def q_max(self, obs, gens=None):
        return self.net(obs).max(-1).values


class EpsilonGreedy:
    """Epsilon-greedy acting with a linearly annealed epsilon (Mnih et al. 2015); uniform before learning."""

    def __init__(self, cfg: DQNConfig, num_actions: int, gens):
        self.cfg, self.num_actions, self.gens = cfg, num_actions, gens
        self.uniforms = UniformBlocks(gens) if all(g.device.type == "cpu" for g in gens) else None

    def epsilon(self, step: int) -> float:
        c = self.cfg
        if step < c.learning_starts:
            return 1.0
        return anneal(c.eps_start, c.eps_end, (step - c.learning_starts) / max(1, c.eps_decay_steps))

    def act(self, agent: QAgent, obs: torch.Tensor, step: int) -> np.ndarray:
        u = self.uniforms.take(2) if self.uniforms is not None else member_rand(self.gens, (2,), "cpu").numpy()
        return self.choose(agent, obs, self.epsilon(step), u)

    def act_eval(self, agent: QAgent, obs: torch.Tensor, gens) -> np.ndarray:
        return self.choose(agent, obs, self.cfg.eval_eps, member_rand(gens, (2,), "cpu").numpy())

    @torch.no_grad()
    def choose(self, agent: QAgent, obs: torch.Tensor, epsilon: float, u: np.ndarray) -> np.ndarray:
        """Epsilon-greedy actions [M] for one observation per member [M, ...], from two uniform numbers per member
        [M, 2] (the first decides whether to explore, the second picks the random action)."""
        # numpy on the draws: the same float32 arithmetic as torch's (epsilon and the product rounded to float32,
        # truncation toward zero) at a fraction of the per-operation cost, which dominates a step of one member
        explore = u[:, 0] < np.float32(epsilon)
        if explore.all():  # every member explores (always so at epsilon 1): no forward pass, same numbers
            return self._random_action(u)
        greedy = agent.greedy(obs.unsqueeze(1), None).cpu().numpy()[:, 0]
        if not explore.any():  # no member explores (most steps once epsilon is small): the greedy actions
            return greedy
        return np.where(explore, self._random_action(u), greedy)

    def _random_action(self, u: np.ndarray) -> np.ndarray:
        return np.minimum((u[:, 1] * np.float32(self.num_actions)).astype(np.int64), self.num_actions - 1)

    def end_episodes(self, mask) -> None:
        """Epsilon-greedy has no per-episode state."""

    def state_dict(self) -> dict:
        """The act stream's numbers drawn but not read yet (the stream itself is the agent's)."""
        return {"uniforms": self.uniforms.state_dict()} if self.uniforms is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.uniforms is not None:
            self.uniforms.load_state_dict(state["uniforms"])


class DQNAgent(QAgent):
    """Q-learning (qlearning.py) with a discrete head, plain or dueling, and epsilon-greedy exploration."""

    def __init__(self, cfg: DQNConfig, obs_shape, frame_stack: int, num_actions: int, seeds, total_steps: int,
                 device: torch.device | str = "cpu"):
        self.num_actions = num_actions
        super().__init__(cfg, obs_shape, frame_stack, num_actions, seeds, total_steps, device)
        self.explorer = EpsilonGreedy(cfg, num_actions, self.streams["act"])

    def make_head(self, obs_shape, frame_stack, num_actions, seeds) -> DiscreteHead:
        c = self.cfg
        net = batch_members(lambda: make_q_network(obs_shape, frame_stack, num_actions, c.hidden, c.dueling,
                                                   dueling_grad_scale=1 / math.sqrt(2) if c.dueling else 1.0),
                            seeds, self.device)
        return DiscreteHead(net)

    def action_spec(self):
        return (), torch.int64

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q [M, B, A] for observations [M, B, ...]."""
        return self.head.q_values(self._obs(obs))

    def epsilon(self, step: int) -> float:
        return self.explorer.epsilon(step)


Config = DQNConfig
Agent = DQNAgent
