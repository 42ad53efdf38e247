"""One Q-learner for every deep family, with pluggable heads (pfrl's idea, written for the member axis).

Q-learning is written once here: the TD target (with or without double Q-learning), the loss (Huber or
squared), n-step returns and prioritized replay (both from replay.py), the target network update and the
update rate. A family supplies a *head*, a member-batched Q-function with a max over actions:

- ``q(obs, action) -> [M, B]``: Q of given actions;
- ``greedy(obs, gens) -> actions [M, B, ...]``: the maximizing action (searches draw from ``gens``);
- ``q_max(obs, gens) -> [M, B]``: the maximal value;
- optionally ``policy_loss(obs) -> [M]`` and ``policy_parameters()``: a maximizer trained alongside, DDPG's
  actor (Lillicrap et al. 2016); its optimizer steps after the Q-function's (Algorithm 1's order).

Heads: discrete (plain, dueling; dqn.py), quadratic (NAF; naf.py), search (uniform, CEM; sampled_q.py) and
actor-critic (DDPG; ddpg.py). Every setting of ``QConfig`` means the same for every head, so "double NAF" or
"prioritized DDPG" is a registry row, not code. A family adds its exploration (``explorer``): epsilon-greedy for
discrete actions, greedy plus noise in a box for continuous ones.

The TD target, for a transition (s, a, R, discount, s') from replay (R the n-step discounted reward sum,
discount gamma^n or 0 after a terminal state):
    DQN:    y = R + discount * max_a' Q_target(s', a')          = R + discount * target.q_max(s')
    double: y = R + discount * Q_target(s', argmax_a' Q(s', a')) = R + discount * target.q(s', online.greedy(s'))
(van Hasselt, Guez, Silver 2016). The loss is mean_i w_i l(Q(s_i, a_i) - y_i) per member, with importance
weights w (ones for uniform replay), summed over members and differentiated by ordinary autograd (members.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algorithms.agent import Agent
from algorithms.members import (
    MemberBatchNorm1d,
    clip_member_grad_norm,
    make_target,
    polyak_lists,
    polyak_pairs,
    torch_generators,
)
from algorithms.optim import NATURE_EPS_MEAN_GRADIENT, CenteredRMSprop, TorchRMSprop
from algorithms.replay import SAMPLERS, Batch, ReplayBuffer, anneal

LOSSES = ("huber", "mse")
OPTIMIZERS = ("rmsprop", "rmsprop_torch", "adam")

# Keys whose meaning was made one across families: the old name is an error naming the new one.
RENAMED = {
    "train_period": "updates_per_step (gradient updates per agent step: 1/train_period, e.g. 0.25 for one "
                    "update every 4 steps)",
}


@dataclass
class QConfig:
    """What every Q-learner shares. A family's Config sets its paper's defaults, citing them."""

    gamma: float = 0.99
    """Discount factor."""
    lr: float = 1e-3
    """Learning rate of the Q-function."""
    optimizer: str = "adam"
    """adam (Kingma & Ba 2015); rmsprop: centered with eps inside the square root, as DeepMind ran DQN (Mnih et
    al. 2015; optim.py); rmsprop_torch: torch's RMSprop, eps outside the square root (as Young & Tian 2019 ran
    MinAtar)."""
    adam_eps: float = 1e-8
    """Adam epsilon (torch's default)."""
    rmsprop_alpha: float = 0.95
    """RMSprop squared-gradient momentum (Mnih et al. 2015, Extended Data Table 1)."""
    rmsprop_eps: float = NATURE_EPS_MEAN_GRADIENT
    """RMSprop eps. For rmsprop, inside the square root: Nature's 0.01 for a summed minibatch gradient, rescaled
    to this mean-over-batch loss, 0.01 / 32^2 (derivation in algorithms/optim.py; Dopamine uses 1e-5). For
    rmsprop_torch, outside it, as torch adds it."""
    rmsprop_centered: bool = True
    """Centered RMSprop, as in DeepMind's implementation (Graves 2013)."""
    batch_size: int = 64
    """Minibatch size."""
    replay_size: int = 1_000_000
    """Replay memory size in agent steps."""
    learning_starts: int = 1_000
    """Agent steps before learning begins (acting is uniform until then)."""
    updates_per_step: float = 1.0
    """Gradient updates per agent step: 0.25 = one update every 4 steps (Mnih et al. 2015), 5 = five updates
    after every step (Gu et al. 2016, Algorithm 1's I)."""
    target_period: int = 1
    """Gradient updates between target-network updates (1 = after every update)."""
    polyak_tau: float = 1.0
    """Each target update sets target <- (1 - tau) target + tau online; 1 is a hard copy."""
    loss: str = "mse"
    """huber (Mnih et al. 2015's error clipping to [-1, 1]) or mse (1/2 td^2: the same inside huber_delta)."""
    huber_delta: float = 1.0
    """Huber threshold (Nature clips the error at 1)."""
    double: bool = False
    """Double Q-learning target: the online head picks the next action, the target head values it (van
    Hasselt, Guez, Silver 2016)."""
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
    grad_clip_norm: float = 0.0
    """Clip each member's gradient to this global L2 norm; 0 disables (Wang et al. 2016 clip at 10)."""
    clip_rewards: bool = False
    """Clip training rewards to [-1, 1] (Mnih et al. 2015, Atari); evaluation returns are always raw."""


def validate_q(cfg: QConfig) -> list[str]:
    """Problems with the shared settings, each naming the key and the valid choices (empty when fine)."""
    errors = []
    if cfg.loss not in LOSSES:
        errors.append(f"loss={cfg.loss!r}: valid: {', '.join(LOSSES)}")
    if cfg.optimizer not in OPTIMIZERS:
        errors.append(f"optimizer={cfg.optimizer!r}: valid: {', '.join(OPTIMIZERS)}")
    if cfg.sampler not in SAMPLERS:
        errors.append(f"sampler={cfg.sampler!r}: valid: {', '.join(SAMPLERS)}")
    for key in ("lr", "batch_size", "replay_size", "updates_per_step", "target_period", "n_step"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if cfg.learning_starts < 0:
        errors.append(f"learning_starts={cfg.learning_starts}: must be >= 0")
    if not 0 <= cfg.gamma <= 1:
        errors.append(f"gamma={cfg.gamma}: must be in [0, 1]")
    if not 0 < cfg.polyak_tau <= 1:
        errors.append(f"polyak_tau={cfg.polyak_tau}: must be in (0, 1]")
    if cfg.batch_size > cfg.replay_size:
        errors.append(f"batch_size={cfg.batch_size}: must not exceed replay_size={cfg.replay_size}")
    if cfg.grad_clip_norm < 0:
        errors.append(f"grad_clip_norm={cfg.grad_clip_norm}: must be >= 0 (0 disables)")
    return errors


def td_targets(q_next_online: torch.Tensor, q_next_target: torch.Tensor, reward: torch.Tensor,
               discount: torch.Tensor, double: bool) -> torch.Tensor:
    """y = r + discount * Q_target(s', a*), a* = argmax of the online (double) or target (DQN) Q-values [..., A]:
    the discrete head's case of QAgent.targets, spelled out."""
    a_star = (q_next_online if double else q_next_target).argmax(dim=-1, keepdim=True)
    return reward + discount * q_next_target.gather(-1, a_star).squeeze(-1)


def td_loss(td: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Element-wise loss of TD errors: Huber (quadratic inside delta, linear outside) or 1/2 td^2."""
    if kind == "huber":
        return F.huber_loss(td, torch.zeros_like(td), reduction="none", delta=delta)
    return 0.5 * td.pow(2)


class MemberAdam(torch.optim.Adam):
    """torch's fused Adam (one kernel for all tensors, the same element-wise arithmetic), with ``fast_step``:
    the same update called without torch.optim's per-step Python wrappers (hooks, dispatch, compile guards),
    which cost several times the arithmetic of a small network on a CPU (measured: 0.30 of 0.42 ms per step
    for a 120-84 MLP of 8 members)."""

    def __init__(self, params, **kwargs):
        super().__init__(params, fused=True, **kwargs)
        self._lists = None

    @torch.no_grad()
    def fast_step(self) -> None:
        if self._lists is None or any(p.grad is None for p in self._lists[0]):
            self.step()  # creates the state on the first call; the general path for missing gradients
            group = self.param_groups[0]
            params = [p for p in group["params"] if p.grad is not None]
            if len(self.param_groups) == 1 and len(params) == len(group["params"]):
                state = [self.state[p] for p in params]
                self._lists = (params, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                               [s["step"] for s in state])
            return
        params, exp_avgs, exp_avg_sqs, steps = self._lists
        g = self.param_groups[0]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps, lr=g["lr"],
                           beta1=g["betas"][0], beta2=g["betas"][1], weight_decay=g["weight_decay"], eps=g["eps"],
                           amsgrad=False, maximize=False)

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._lists = None


def make_optimizer(cfg: QConfig, params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """The configured element-wise optimizer over stacked member parameters."""
    if cfg.optimizer == "rmsprop":
        if weight_decay:
            raise ValueError("rmsprop (DeepMind's) takes no weight decay; use adam or rmsprop_torch")
        return CenteredRMSprop(params, lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                               centered=cfg.rmsprop_centered)
    if cfg.optimizer == "rmsprop_torch":
        return TorchRMSprop(params, lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.rmsprop_eps,
                            centered=cfg.rmsprop_centered, weight_decay=weight_decay)
    return MemberAdam(params, lr=lr, eps=cfg.adam_eps, weight_decay=weight_decay)


def updates_due(rate: Fraction, step: int) -> int:
    """Updates after agent step ``step`` (1-based) at ``rate`` per step: floor(step r) - floor((step-1) r),
    exact in rationals, so 1/4 updates after steps 4, 8, ... and 5 after every step."""
    if rate.denominator == 1:  # a whole rate: the same count without rational arithmetic on every step
        return rate.numerator
    return int((step * rate) // 1 - ((step - 1) * rate) // 1)


class Head(nn.Module):
    """A member-batched Q-function with a max over actions (see the module docstring)."""

    def q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def greedy(self, obs: torch.Tensor, gens=None) -> torch.Tensor:
        raise NotImplementedError

    def q_max(self, obs: torch.Tensor, gens=None) -> torch.Tensor:
        raise NotImplementedError

    def q_parameters(self) -> list[nn.Parameter]:
        """Parameters trained by the TD loss (all of them unless a policy is trained apart)."""
        return list(self.parameters())

    def policy_loss(self, obs: torch.Tensor) -> torch.Tensor | None:
        """Per-member loss [M] of a maximizer trained alongside the Q-function, or None."""
        return None

    def policy_parameters(self) -> list[nn.Parameter]:
        return []


class QAgent(Agent):
    """Q-learning for M members with a family's head and explorer (see the module docstring).

    Subclasses implement ``make_head(obs_shape, frame_stack, action, seeds) -> Head`` and set
    ``self.explorer`` (an object with ``act``, ``act_eval``, ``end_episodes``, ``state_dict`` and
    ``load_state_dict``); everything else is here.

    A member whose loss or metrics become non-finite is marked in ``diverged`` and frozen: its parameters are
    restored after every later optimizer step, so its neighbours go on exactly as they would without it.
    """

    def __init__(self, cfg: QConfig, obs_shape, frame_stack: int, action, seeds, total_steps: int,
                 device: torch.device | str = "cpu"):
        self.cfg, self.device, self.total_steps = cfg, torch.device(device), total_steps
        self.seeds, self.M = list(seeds), len(seeds)
        self.obs_shape, self.frame_stack = tuple(obs_shape), frame_stack
        # every random stream of the agent, one generator per member, saved in checkpoints (the replay saves its own)
        self.streams: dict[str, list[torch.Generator]] = {name: torch_generators(seeds, name)
                                                           for name in ("act", "target", "value", "replay")}
        self.head: Head = self.make_head(obs_shape, frame_stack, action, self.seeds)
        self.batch_norm = any(isinstance(m, MemberBatchNorm1d) for m in self.head.modules())
        self.target = make_target(self.head)
        self.target.eval()
        self._polyak_pairs = polyak_pairs(self.target, self.head)
        self.head.eval()  # batch norm uses running statistics except while computing the TD loss
        self.q_params, self.policy_params = self.head.q_parameters(), self.head.policy_parameters()
        self.opt = make_optimizer(cfg, self.q_params, cfg.lr, self.q_weight_decay())
        self.policy_opt = make_optimizer(cfg, self.policy_params, self.policy_lr()) if self.policy_params else None
        self.sampleable = False  # once every member's replay can be sampled, it stays so
        self.last_actor_q = torch.zeros(self.M, device=self.device)
        self.rate = Fraction(cfg.updates_per_step).limit_denominator(1000)
        self.updates = 0
        self.diverged = torch.zeros(self.M, dtype=torch.bool)
        self._frozen: dict[str, torch.Tensor] = {}
        self.explorer = None

    # ------------------------------------------------------------------------------------------ family hooks
    def make_head(self, obs_shape, frame_stack: int, action, seeds) -> Head:
        raise NotImplementedError

    def q_weight_decay(self) -> float:
        return 0.0

    def policy_lr(self) -> float:
        return self.cfg.lr

    def make_replay(self, frame_shape, frame_dtype, frame_stack: int) -> ReplayBuffer:
        c, action = self.cfg, self.action_spec()
        if frame_dtype.is_floating_point:
            frame_dtype = torch.float32  # the precision the networks use (MuJoCo observations are float64)
        return ReplayBuffer(self.M, c.replay_size, frame_shape, frame_dtype, action_shape=action[0],
                            action_dtype=action[1], frame_stack=frame_stack, n_step=c.n_step, gamma=c.gamma,
                            sampler=c.sampler, alpha=c.per_alpha, priority_eps=c.per_eps,
                            generators=self.streams["replay"])

    def action_spec(self) -> tuple[tuple[int, ...], torch.dtype]:
        """(shape, dtype) of one member's action in replay."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ acting
    def _obs(self, obs: torch.Tensor) -> torch.Tensor:
        obs = obs.to(self.device)
        return obs.float() if obs.is_floating_point() else obs

    def act(self, obs: torch.Tensor, step: int) -> np.ndarray:
        return self.explorer.act(self, obs, step)

    def act_eval(self, obs: torch.Tensor, gens) -> np.ndarray:
        return self.explorer.act_eval(self, obs, gens)

    def end_episodes(self, mask: np.ndarray) -> None:
        self.explorer.end_episodes(mask)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor, gens) -> torch.Tensor:
        """Greedy actions [M, B, ...] for observations [M, B, ...]."""
        return self.head.greedy(self._obs(obs), gens)

    @torch.no_grad()
    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """max_u Q(s, u) [M, B]: the value estimate van Hasselt et al. 2016 plot (Fig. 3)."""
        return self.head.q_max(self._obs(obs), self.streams["value"])

    # ------------------------------------------------------------------------------------------ learning
    @torch.no_grad()
    def targets(self, b: Batch) -> torch.Tensor:
        """y [M, B] (module docstring): the target head's max, or its value of the online head's choice."""
        if self.cfg.double:
            value = self.target.q(b.next_obs, self.head.greedy(b.next_obs, self.streams["target"]))
        else:
            value = self.target.q_max(b.next_obs, self.streams["target"])
        return b.reward + b.discount * value

    def sample(self, replay: ReplayBuffer, step: int) -> Batch:
        c = self.cfg
        b = replay.sample(c.batch_size, beta=anneal(c.per_beta0, 1.0, step / max(1, self.total_steps)))
        return self.to_device(b)

    def to_device(self, b: Batch) -> Batch:
        return Batch(obs=self._obs(b.obs), action=b.action.to(self.device), reward=b.reward.to(self.device),
                     discount=b.discount.to(self.device), next_obs=self._obs(b.next_obs), index=b.index,
                     weight=b.weight.to(self.device))

    def update(self, b: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One gradient step of the Q-function (and the policy, if any) for every member; metrics [M], td [M, B]."""
        c = self.cfg
        y = self.targets(b)
        if self.batch_norm:
            self.head.train()
        q_sa = self.head.q(b.obs, b.action)
        if self.batch_norm:
            self.head.eval()
        td = q_sa - y
        per_row = td_loss(td, c.loss, c.huber_delta)
        # uniform replay's weights are ones, and x * 1 == x exactly: skip the product
        loss = (per_row if c.sampler == "uniform" else b.weight * per_row).mean(1)  # [M]
        self._step(self.opt, self.q_params, loss)
        metrics = {"td_loss": loss.detach(), "q_batch_mean": q_sa.detach().mean(1)}
        policy_now = self.policy_opt is not None and self.policy_due()
        if policy_now:
            policy_loss = self.head.policy_loss(b.obs)
            self._step(self.policy_opt, self.policy_params, policy_loss)
            self.last_actor_q = -policy_loss.detach()
        if self.policy_opt is not None:
            metrics["actor_q"] = self.last_actor_q  # the latest actor update's, when actor updates are delayed
        self.updates += 1
        # with delayed policy updates the targets move with the actor (Fujimoto et al. 2018)
        if self.updates % c.target_period == 0 and (self.policy_opt is None or policy_now):
            self.polyak(c.polyak_tau)
        return metrics, td.detach()

    def policy_due(self) -> bool:
        """Whether this update also steps the policy (DDPG: every update unless delayed)."""
        return True

    @torch.no_grad()
    def polyak(self, tau: float) -> None:
        """target <- (1 - tau) target + tau online over every parameter; buffers (batch-norm statistics) copied."""
        polyak_lists(self._polyak_pairs, tau)

    def _step(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], loss: torch.Tensor) -> None:
        """Minimize the sum of the members' losses; diverged members contribute nothing and stay frozen."""
        for p in params:
            p.grad = None
        if self.n_diverged:  # kept equal to diverged.sum() by _check_divergence and load_state_dict
            loss = torch.where(self.diverged.to(loss.device), torch.zeros_like(loss), loss)
        loss.sum().backward()
        if self.cfg.grad_clip_norm > 0:
            clip_member_grad_norm(params, self.cfg.grad_clip_norm)
        if isinstance(opt, MemberAdam):
            opt.fast_step()
        else:
            opt.step()
        if self._frozen:
            self._restore_frozen()

    def learn(self, replay: ReplayBuffer, step: int) -> dict[str, torch.Tensor] | None:
        """The updates due after agent step ``step`` for every member; the metrics are their means [M]."""
        if step < self.cfg.learning_starts:
            return None
        if not self.sampleable:
            self.sampleable = replay.can_sample()
            if not self.sampleable:
                return None
        n = updates_due(self.rate, step)
        if n == 0:
            return None
        outs = []
        for _ in range(n):
            b = self.sample_batch(replay, step)
            metrics, td = self.update(b)
            if b.index is not None and replay.sampler != "uniform":
                replay.update_priorities(b.index, torch.where(torch.isfinite(td), td, torch.zeros_like(td)))
            self._check_divergence(metrics)
            outs.append(metrics)
        if len(outs) == 1:
            return outs[0]
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}

    def sample_batch(self, replay: ReplayBuffer, step: int) -> Batch:
        """A minibatch for every member (imagination rollouts mix in imagined rows here)."""
        return self.sample(replay, step)

    def _check_divergence(self, metrics: dict[str, torch.Tensor]) -> None:
        # The common case in three small operations: the sum of every member's metrics is finite only if each
        # value is (a NaN or an infinity carries through a sum); a sum of finite values that overflows goes on
        # to the exact check below, which marks no member when every value is finite.
        values = list(metrics.values())
        if math.isfinite(torch.cat(values).sum()):
            return
        finite = torch.isfinite(torch.stack(values)).all(0).cpu()
        newly = ~finite & ~self.diverged
        if newly.any():
            self.diverged |= newly
            self.n_diverged = int(self.diverged.sum())
            self._freeze(newly)

    @torch.no_grad()
    def _freeze(self, members: torch.Tensor) -> None:
        """Keep the diverged members' current parameters from now on (restored after each optimizer step)."""
        for name, p in self.head.named_parameters():
            snap = self._frozen.setdefault(name, p.detach().clone())
            snap[members.to(p.device)] = p.detach()[members.to(p.device)]

    @torch.no_grad()
    def _restore_frozen(self) -> None:
        mask = self.diverged.to(self.device)
        for name, p in self.head.named_parameters():
            p[mask] = self._frozen[name][mask]

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"head": self.head.state_dict(), "target": self.target.state_dict(), "opt": self.opt.state_dict(),
                "policy_opt": self.policy_opt.state_dict() if self.policy_opt is not None else None,
                "updates": self.updates, "diverged": self.diverged.clone(), "frozen": dict(self._frozen),
                "last_actor_q": self.last_actor_q,
                "explorer": self.explorer.state_dict(),
                "streams": {n: torch.stack([g.get_state() for g in gens]) for n, gens in self.streams.items()
                            if n != "replay"}}

    def load_state_dict(self, state: dict) -> None:
        self.head.load_state_dict(state["head"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])
        if self.policy_opt is not None:
            self.policy_opt.load_state_dict(state["policy_opt"])
        self.updates = int(state["updates"])
        self.last_actor_q = state["last_actor_q"].clone()
        self.diverged = state["diverged"].clone()
        self.n_diverged = int(self.diverged.sum())
        self._frozen = {k: v.clone() for k, v in state["frozen"].items()}
        self.explorer.load_state_dict(state["explorer"])
        for n, states in state["streams"].items():
            for g, s in zip(self.streams[n], states, strict=True):
                g.set_state(s.clone())
