"""What DDPG, NAF and sampled-max Q-learning share: acting in an action box with exploration noise, a replay
of continuous actions, the update schedule, target networks and checkpoints.

The three differ only in how they take the max over actions (Levine, CS 285, "Q-learning with continuous
actions": stochastic optimization (sampled max, CEM), a Q-function that is easy to maximize (NAF), a learned
maximizer (DDPG)). So each family is one subclass of ``ContinuousQAgent`` that builds its networks with
``add_net`` and supplies ``greedy``, ``value_estimate`` and ``update``; everything else is written once here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from algorithms.explore import GaussianNoise, OrnsteinUhlenbeckNoise
from algorithms.members import Params, Stacked, member_rand, torch_generators
from algorithms.replay import Batch, ReplayBuffer

NOISES = ("ou", "gaussian")


@dataclass
class ContinuousConfig:
    """Settings every continuous-action Q-learner shares; a family's Config adds its own and may change a
    default (citing its source)."""

    gamma: float = 0.99
    """Discount factor (Lillicrap et al. 2016, Sec. 7)."""
    lr: float = 1e-3
    """Adam learning rate of the Q-function (Lillicrap et al. 2016, Sec. 7: 1e-3 for the critic)."""
    batch_size: int = 64
    """Minibatch size (Lillicrap et al. 2016, Sec. 7)."""
    replay_size: int = 1_000_000
    """Replay size in agent steps (Lillicrap et al. 2016, Sec. 7)."""
    learning_starts: int = 1_000
    """Agent steps of uniformly random actions before learning begins. Ours: Lillicrap et al. and Gu et al.
    learn from the first steps; TD3 (Fujimoto et al. 2018) starts with 1,000-10,000 random steps."""
    updates_per_step: int = 1
    """Gradient updates per environment step (Lillicrap et al. 2016: 1; Gu et al. 2016, Algorithm 1: I)."""
    polyak_tau: float = 0.001
    """Target networks: target <- (1 - tau) target + tau online after every update (Lillicrap et al. 2016,
    Sec. 7; Gu et al. 2016, Algorithm 1)."""
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
    errors = []
    if cfg.noise not in NOISES:
        errors.append(f"noise={cfg.noise!r}: valid: {', '.join(NOISES)}")
    for key in ("lr", "batch_size", "replay_size", "updates_per_step"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if cfg.learning_starts < 0:
        errors.append(f"learning_starts={cfg.learning_starts}: must be >= 0")
    if not 0 <= cfg.gamma <= 1:
        errors.append(f"gamma={cfg.gamma}: must be in [0, 1]")
    if not 0 < cfg.polyak_tau <= 1:
        errors.append(f"polyak_tau={cfg.polyak_tau}: must be in (0, 1]")
    if cfg.noise_sigma < 0:
        errors.append(f"noise_sigma={cfg.noise_sigma}: must be >= 0")
    if not 0 < cfg.ou_theta < 2:
        errors.append(f"ou_theta={cfg.ou_theta}: must be in (0, 2) for a stationary process")
    if not cfg.hidden or min(cfg.hidden) <= 0:
        errors.append(f"hidden={cfg.hidden}: give at least one layer width, all > 0")
    if cfg.batch_size > cfg.replay_size:
        errors.append(f"batch_size={cfg.batch_size}: must not exceed replay_size={cfg.replay_size}")
    return errors


def batch_to(b: Batch, device: torch.device) -> Batch:
    """A replay batch on the learner's device with float32 observations (MuJoCo observations are float64)."""
    return Batch(obs=b.obs.to(device, torch.float32), action=b.action.to(device, torch.float32),
                 reward=b.reward.to(device), discount=b.discount.to(device),
                 next_obs=b.next_obs.to(device, torch.float32), index=b.index, weight=b.weight.to(device))


class ContinuousQAgent:
    """Acts and learns for M members in a box of continuous actions (the runner's agent interface).

    Subclasses build networks with ``add_net`` and implement ``greedy(obs [M, B, dx], gens) -> [M, B, du]``,
    ``value_estimate(obs [M, B, dx]) -> [M, B]`` and ``update(batch) -> dict of [M] metrics`` (one gradient
    step for every member, target update included).
    """

    def __init__(self, cfg: ContinuousConfig, obs_shape: Sequence[int], frame_stack: int, action_space,
                 seeds: Sequence[int], total_steps: int, device: torch.device | str = "cpu"):
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"{type(self).__name__} needs a Box of continuous actions, got {action_space}")
        if len(obs_shape) != 1 or frame_stack != 1:
            raise ValueError(f"{type(self).__name__} needs state-vector observations, got shape {tuple(obs_shape)} "
                             f"with a stack of {frame_stack}")
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.seeds, self.M = list(seeds), len(seeds)
        self.obs_dim, self.action_dim = int(obs_shape[0]), int(action_space.shape[0])
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32)
        self.half_range = (self.high - self.low) / 2
        # every random stream of the agent, one generator per member, saved in checkpoints
        self.streams: dict[str, list[torch.Generator]] = {name: torch_generators(seeds, name)
                                                           for name in ("act", "noise", "replay")}
        if cfg.noise == "ou":
            self.noise = OrnsteinUhlenbeckNoise(self.streams["noise"], self.action_dim, theta=cfg.ou_theta,
                                                sigma=cfg.noise_sigma)
        else:
            self.noise = GaussianNoise(self.streams["noise"], self.action_dim, sigma=cfg.noise_sigma)
        self.nets: dict[str, Stacked] = {}
        self.targets: dict[str, Params] = {}
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self.updates = 0

    def add_net(self, name: str, make: Callable[[], nn.Module], lr: float, weight_decay: float = 0.0) -> Stacked:
        """Stack M copies of a network (initialized from the ``init/<name>`` stream), its target and Adam."""
        net = Stacked(make, self.seeds, self.device, stream=f"init/{name}")
        net.base.eval()  # batch norm uses running statistics except inside train_mode
        self.nets[name] = net
        self.targets[name] = net.clone_params()
        self.opts[name] = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        return net

    @contextmanager
    def train_mode(self, *names: str) -> Iterator[None]:
        """Inside, the named networks' batch norm uses (and updates) minibatch statistics."""
        for n in names:
            self.nets[n].base.train()
        try:
            yield
        finally:
            for n in names:
                self.nets[n].base.eval()

    def make_replay(self, frame_shape, frame_dtype, frame_stack: int) -> ReplayBuffer:
        # observations are stored as float32, the precision the networks use
        dtype = torch.float32 if frame_dtype.is_floating_point else frame_dtype
        return ReplayBuffer(self.M, self.cfg.replay_size, frame_shape, dtype, action_shape=(self.action_dim,),
                            action_dtype=torch.float32, frame_stack=frame_stack, gamma=self.cfg.gamma,
                            generators=self.streams["replay"])

    # ------------------------------------------------------------------------------------------ acting
    def greedy(self, obs: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def clip(self, u: torch.Tensor) -> torch.Tensor:
        return torch.maximum(torch.minimum(u, self.high), self.low)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, step: int) -> np.ndarray:
        """Training actions [M, du]: uniform in the box before learning starts, then greedy plus noise."""
        if step < self.cfg.learning_starts:
            u = member_rand(self.streams["act"], (self.action_dim,), "cpu")
            return (self.low + (self.high - self.low) * u).numpy()
        mu = self.greedy(obs.to(self.device, torch.float32).unsqueeze(1), self.streams["act"])[:, 0].cpu()
        return self.clip(mu + self.half_range * self.noise.sample()).numpy()

    @torch.no_grad()
    def act_eval(self, obs: torch.Tensor, gens: Sequence[torch.Generator]) -> np.ndarray:
        """Evaluation actions [M, du]: the greedy action, no noise."""
        return self.greedy(obs.to(self.device, torch.float32).unsqueeze(1), gens)[:, 0].cpu().numpy()

    def end_episodes(self, mask: np.ndarray) -> None:
        """Restart the noise process of the members whose episode ended."""
        self.noise.reset(torch.as_tensor(mask))

    # ------------------------------------------------------------------------------------------ learning
    def update(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample_batch(self, replay: ReplayBuffer) -> Batch:
        return batch_to(replay.sample(self.cfg.batch_size), self.device)

    def learn(self, replay: ReplayBuffer, step: int) -> dict[str, torch.Tensor] | None:
        """``updates_per_step`` updates for every member; the metrics are their means [M]."""
        if step < self.cfg.learning_starts or not replay.can_sample():
            return None
        outs = []
        for _ in range(self.cfg.updates_per_step):
            outs.append(self.update(self.sample_batch(replay)))
            self.updates += 1
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"params": {n: {k: v.detach() for k, v in net.params.items()} for n, net in self.nets.items()},
                "buffers": {n: dict(net.buffers) for n, net in self.nets.items()},
                "targets": self.targets, "opts": {n: o.state_dict() for n, o in self.opts.items()},
                "updates": self.updates, "noise": getattr(self.noise, "state", None),
                "streams": {n: torch.stack([g.get_state() for g in gens]) for n, gens in self.streams.items()
                            if n != "replay"}}  # the replay saves its own generators

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for n, net in self.nets.items():
                for k, v in state["params"][n].items():
                    net.params[k].copy_(v)
                for k, v in state["buffers"][n].items():
                    net.buffers[k].copy_(v)
                for k, v in state["targets"][n].items():
                    self.targets[n][k].copy_(v)
        for n, opt in self.opts.items():
            opt.load_state_dict(state["opts"][n])
        self.updates = int(state["updates"])
        if state["noise"] is not None:
            self.noise.state = state["noise"].clone()
        for n, states in state["streams"].items():
            for g, s in zip(self.streams[n], states, strict=True):
                g.set_state(s.clone())
