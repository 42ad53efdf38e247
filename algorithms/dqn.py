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
small environments, where Nature's budgets make no sense.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from algorithms.members import (
    Stacked,
    apply_grads,
    clip_member_grad_norm,
    member_grads,
    member_rand,
    polyak_update,
    torch_generators,
)
from algorithms.networks import make_q_network
from algorithms.optim import NATURE_EPS_MEAN_GRADIENT, CenteredRMSprop
from algorithms.replay import ReplayBuffer, anneal


@dataclass
class DQNConfig:
    """DQN hyperparameters. Defaults: Mnih et al. 2015, Extended Data Table 1, unless a comment says otherwise."""

    gamma: float = 0.99
    """Discount factor."""
    lr: float = 2.5e-4
    """Learning rate."""
    optimizer: str = "rmsprop"
    """rmsprop (Nature) or adam (Kingma & Ba 2015; Hessel et al. 2018 use it for Rainbow)."""
    rmsprop_alpha: float = 0.95
    """RMSprop squared-gradient momentum (Nature)."""
    rmsprop_eps: float = NATURE_EPS_MEAN_GRADIENT
    """RMSprop eps inside the square root: Nature's 0.01 for a summed minibatch gradient, rescaled to our
    mean-over-batch loss, 0.01 / 32^2 (derivation in algorithms/optim.py; Dopamine uses 1e-5)."""
    rmsprop_centered: bool = True
    """Centered RMSprop, as in DeepMind's implementation (Graves 2013)."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (Hessel et al. 2018)."""
    batch_size: int = 32
    """Minibatch size."""
    replay_size: int = 1_000_000
    """Replay memory size in agent steps."""
    learning_starts: int = 50_000
    """Replay start size: agent steps of uniform-random acting before learning begins."""
    train_period: int = 4
    """Update frequency: agent steps between gradient updates."""
    target_period: int = 10_000
    """Agent steps between target updates (Nature's published code counts agent steps)."""
    polyak_tau: float = 1.0
    """Target update: target <- (1 - tau) target + tau online; 1 is the Nature hard copy."""
    eps_start: float = 1.0
    """Initial exploration epsilon."""
    eps_end: float = 0.1
    """Final exploration epsilon."""
    eps_decay_steps: int = 1_000_000
    """Agent steps over which epsilon is annealed linearly ('final exploration frame' in Nature)."""
    eval_eps: float = 0.05
    """Epsilon of the evaluation policy (Nature)."""
    loss: str = "huber"
    """huber (Nature's error clipping to [-1, 1]) or mse."""
    huber_delta: float = 1.0
    """Huber threshold (Nature clips the error at 1)."""
    clip_rewards: bool = True
    """Clip training rewards to [-1, 1] (Nature); evaluation returns are always raw."""
    grad_clip_norm: float = 0.0
    """Clip each member's gradient to this global L2 norm; 0 disables (Nature: none; ours)."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths for state-vector inputs (ours); pixels always get the Nature CNN."""
    double: bool = False
    """Double Q-learning target (van Hasselt et al. 2016)."""
    dueling: bool = False
    """Dueling architecture (Wang et al. 2016)."""
    n_step: int = 1
    """Steps of the n-step return (1 = one-step Q-learning; Hessel et al. 2018 use 3)."""
    sampler: str = "uniform"
    """Replay sampler: uniform, proportional or rank (Schaul et al. 2016)."""
    per_alpha: float = 0.6
    """Prioritization exponent (Schaul et al. 2016: 0.6 proportional, 0.7 rank)."""
    per_beta0: float = 0.4
    """Initial importance-sampling exponent, annealed linearly to 1 (Schaul et al. 2016: 0.4 / 0.5)."""
    per_eps: float = 1e-6
    """Added to |TD error| so that no priority is zero (Schaul et al. 2016)."""


# Settings for environments other than Atari. Ours: chosen so that DQN learns these tasks on a CPU in
# minutes; CleanRL's CartPole settings (Huang et al. 2022) were the starting point.
PRESETS: dict[str, dict] = {
    "classic": dict(optimizer="adam", lr=1e-3, adam_eps=1e-8, batch_size=64, replay_size=50_000,
                    learning_starts=1_000, train_period=1, target_period=500, eps_end=0.05,
                    eps_decay_steps=10_000, eval_eps=0.0, clip_rewards=False, hidden=[64, 64]),
    "toy": dict(optimizer="adam", lr=1e-3, adam_eps=1e-8, batch_size=32, replay_size=10_000, learning_starts=500,
                train_period=1, target_period=200, eps_end=0.1, eps_decay_steps=2_000, eval_eps=0.0,
                clip_rewards=False, hidden=[32]),
}
PRESETS["mujoco"] = PRESETS["classic"]

LOSSES = ("huber", "mse")
OPTIMIZERS = ("rmsprop", "adam")


def validate(cfg: DQNConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = []
    if cfg.loss not in LOSSES:
        errors.append(f"loss={cfg.loss!r}: valid: {', '.join(LOSSES)}")
    if cfg.optimizer not in OPTIMIZERS:
        errors.append(f"optimizer={cfg.optimizer!r}: valid: {', '.join(OPTIMIZERS)}")
    if cfg.sampler not in ("uniform", "proportional", "rank"):
        errors.append(f"sampler={cfg.sampler!r}: valid: uniform, proportional, rank")
    for key in ("lr", "batch_size", "replay_size", "train_period", "target_period", "n_step"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if not 0 <= cfg.gamma <= 1:
        errors.append(f"gamma={cfg.gamma}: must be in [0, 1]")
    if not 0 < cfg.polyak_tau <= 1:
        errors.append(f"polyak_tau={cfg.polyak_tau}: must be in (0, 1]")
    if cfg.batch_size > cfg.replay_size:
        errors.append(f"batch_size={cfg.batch_size}: must not exceed replay_size={cfg.replay_size}")
    if cfg.learning_starts < 0 or cfg.eps_decay_steps < 0:
        errors.append("learning_starts and eps_decay_steps must be >= 0")
    for key in ("eps_start", "eps_end", "eval_eps"):
        if not 0 <= getattr(cfg, key) <= 1:
            errors.append(f"{key}={getattr(cfg, key)}: must be in [0, 1]")
    return errors


def td_targets(q_next_online: torch.Tensor, q_next_target: torch.Tensor, reward: torch.Tensor,
               discount: torch.Tensor, double: bool) -> torch.Tensor:
    """y = r + discount * Q_target(s', a*), a* = argmax of the online (double) or target (DQN) network."""
    a_star = (q_next_online if double else q_next_target).argmax(dim=-1, keepdim=True)
    return reward + discount * q_next_target.gather(-1, a_star).squeeze(-1)


def td_loss(td: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    if kind == "huber":
        return F.huber_loss(td, torch.zeros_like(td), reduction="none", delta=delta)
    return 0.5 * td.pow(2)


class DQNAgent:
    """Acts and learns for M members; the runner owns environments, evaluation and checkpoints."""

    def __init__(self, cfg: DQNConfig, obs_shape, frame_stack: int, num_actions: int, seeds, total_steps: int,
                 device: torch.device | str = "cpu"):
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.num_actions = num_actions
        self.M = len(seeds)
        self.net = Stacked(lambda: make_q_network(obs_shape, frame_stack, num_actions, cfg.hidden, cfg.dueling),
                           seeds, self.device)
        # on a CPU, convolutions run faster one member at a time than vmapped (see members.member_map)
        self.net.loop = self.loop = self.device.type == "cpu" and len(obs_shape) == 2
        self.target = self.net.clone_params()
        params = self.net.parameters()
        if cfg.optimizer == "rmsprop":
            self.opt = CenteredRMSprop(params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                                       centered=cfg.rmsprop_centered)
        else:
            self.opt = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps)
        self.act_gens = torch_generators(seeds, "act")
        self.replay_gens = torch_generators(seeds, "replay")
        self.updates = 0

    def make_replay(self, frame_shape, frame_dtype, frame_stack: int) -> ReplayBuffer:
        c = self.cfg
        alpha = c.per_alpha
        return ReplayBuffer(self.M, c.replay_size, frame_shape, frame_dtype, frame_stack=frame_stack,
                            n_step=c.n_step, gamma=c.gamma, sampler=c.sampler, alpha=alpha,
                            priority_eps=c.per_eps, generators=self.replay_gens)

    # ------------------------------------------------------------------------------------------ acting
    def epsilon(self, step: int) -> float:
        if step < self.cfg.learning_starts:
            return 1.0
        frac = (step - self.cfg.learning_starts) / max(1, self.cfg.eps_decay_steps)
        return anneal(self.cfg.eps_start, self.cfg.eps_end, frac)

    @torch.no_grad()
    def q_values(self, obs: torch.Tensor) -> torch.Tensor:
        """Q [M, B, A] for observations [M, B, ...]."""
        return self.net(obs.to(self.device))

    @torch.no_grad()
    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """max_a Q(s, a) [M, B]: the value estimate van Hasselt et al. 2016 plot (Fig. 3)."""
        return self.q_values(obs).max(-1).values

    def act(self, obs: torch.Tensor, step: int) -> np.ndarray:
        """Training actions [M]: epsilon-greedy with the annealed epsilon (uniform before learning starts)."""
        return self.epsilon_greedy(obs, self.epsilon(step), self.act_gens)

    def act_eval(self, obs: torch.Tensor, gens) -> np.ndarray:
        """Evaluation actions [M]: epsilon-greedy with the protocol's evaluation epsilon."""
        return self.epsilon_greedy(obs, self.cfg.eval_eps, gens)

    @torch.no_grad()
    def epsilon_greedy(self, obs: torch.Tensor, epsilon: float, gens) -> np.ndarray:
        """Epsilon-greedy actions [M] for one observation per member [M, ...]."""
        u = member_rand(gens, (2,), "cpu")
        if epsilon >= 1.0:  # before learning starts: no forward pass needed, same random numbers drawn
            return (u[:, 1] * self.num_actions).long().clamp(max=self.num_actions - 1).numpy()
        greedy = self.q_values(obs.unsqueeze(1))[:, 0].argmax(-1).cpu()
        random_action = (u[:, 1] * self.num_actions).long().clamp(max=self.num_actions - 1)
        return torch.where(u[:, 0] < epsilon, random_action, greedy).numpy()

    # ------------------------------------------------------------------------------------------ learning
    def _loss(self, p, tp, obs, action, reward, discount, next_obs, weight):
        """One member's loss on one minibatch (vmapped over members by member_grads)."""
        q = self.net.single(p, obs)
        q_sa = q.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            q_next_target = self.net.single(tp, next_obs)
            q_next_online = self.net.single(p, next_obs) if self.cfg.double else q_next_target
            y = td_targets(q_next_online.detach(), q_next_target, reward, discount, self.cfg.double)
        td = q_sa - y
        loss = (weight * td_loss(td, self.cfg.loss, self.cfg.huber_delta)).mean()
        return loss, (td.detach(), q_sa.detach().mean())

    def learn(self, replay: ReplayBuffer, step: int) -> dict[str, torch.Tensor] | None:
        """One gradient update for every member if this step is an update step; per-member metrics [M]."""
        c = self.cfg
        if step < c.learning_starts or step % c.train_period != 0 or not replay.can_sample():
            return None
        beta = anneal(c.per_beta0, 1.0, step / max(1, self.total_steps))
        b = replay.sample(c.batch_size, beta=beta)
        dev = self.device
        grads, loss, (td, q_mean) = member_grads(
            self._loss, self.net.params, self.target, b.obs.to(dev), b.action.to(dev), b.reward.to(dev),
            b.discount.to(dev), b.next_obs.to(dev), b.weight.to(dev), loop=self.loop)
        if c.grad_clip_norm > 0:
            clip_member_grad_norm(grads, c.grad_clip_norm)
        apply_grads(self.opt, self.net.params, grads)
        replay.update_priorities(b.index, td)
        self.updates += 1
        if step % c.target_period < c.train_period:
            polyak_update(self.target, self.net.params, c.polyak_tau)
        return {"td_loss": loss.detach(), "q_batch_mean": q_mean}

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"params": {k: v.detach() for k, v in self.net.params.items()}, "target": self.target,
                "opt": self.opt.state_dict(), "updates": self.updates,
                "act_gens": torch.stack([g.get_state() for g in self.act_gens])}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.net.params[k].copy_(v)
            for k, v in state["target"].items():
                self.target[k].copy_(v)
        self.opt.load_state_dict(state["opt"])
        self.updates = int(state["updates"])
        for g, s in zip(self.act_gens, state["act_gens"], strict=True):
            g.set_state(s.clone())


Config = DQNConfig
Agent = DQNAgent
