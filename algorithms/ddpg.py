"""DDPG: Q-learning whose max over actions is taken by a learned maximizer, for M members at once.

Lillicrap et al. 2016, "Continuous control with deep reinforcement learning" (ICLR), Algorithm 1; Levine,
CS 285, "option 3: learn an approximate maximizer". An actor mu(x) is trained to output argmax_u Q(x, u),
so the max in the target is Q'(x', mu'(x')):

    critic:  minimize (Q(x, u) - y)^2,  y = r + gamma Q'(x', mu'(x'))    (target networks Q', mu')
    actor:   ascend Q(x, mu(x)): the gradient grad_u Q(x, u)|_{u = mu(x)} grad_theta mu(x)
    targets: Polyak averaging with tau after every update

Defaults: Lillicrap et al. 2016, Sec. 7 (400-300 ReLU networks, Adam 1e-4 / 1e-3, critic weight decay 1e-2,
tau 0.001, minibatch 64, replay 10^6, OU noise theta 0.15, sigma 0.2), unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from algorithms.continuous import ContinuousConfig, ContinuousQAgent, validate_common
from algorithms.members import apply_grads, member_grads, polyak_update
from algorithms.networks import DeterministicActor, StateActionCritic
from algorithms.replay import Batch


@dataclass
class DDPGConfig(ContinuousConfig):
    """DDPG hyperparameters: the shared continuous-action settings plus the actor's."""

    hidden: list[int] = field(default_factory=lambda: [400, 300])
    """Hidden widths of actor and critic (Lillicrap et al. 2016, Sec. 7: 400 and 300 units). Gu et al. 2016
    ran their DDPG baseline with NAF's 2x200 networks (Sec. 6): --set hidden=200,200."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (Lillicrap et al. 2016, Sec. 7); ``lr`` is the critic's."""
    critic_weight_decay: float = 0.01
    """L2 weight decay of the critic (Lillicrap et al. 2016, Sec. 7)."""
    critic_action_layer: int = 1
    """Hidden layer whose input also gets the action: 1, "actions were not included until the 2nd hidden
    layer of Q" (Lillicrap et al. 2016, Sec. 7); 0 feeds [x, u] to the first layer."""


PRESETS: dict[str, dict] = {}  # the paper's settings are MuJoCo settings already


def validate(cfg: DDPGConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_common(cfg)
    if cfg.actor_lr <= 0:
        errors.append(f"actor_lr={cfg.actor_lr}: must be > 0")
    if cfg.critic_weight_decay < 0:
        errors.append(f"critic_weight_decay={cfg.critic_weight_decay}: must be >= 0")
    if not 0 <= cfg.critic_action_layer < max(1, len(cfg.hidden)):
        errors.append(f"critic_action_layer={cfg.critic_action_layer}: valid: 0 .. {len(cfg.hidden) - 1} "
                      f"(a hidden layer of hidden={cfg.hidden})")
    return errors


class DDPGAgent(ContinuousQAgent):
    """An actor and a critic per member, each with a Polyak-averaged target copy."""

    def __init__(self, cfg: DDPGConfig, obs_shape, frame_stack, action_space, seeds, total_steps, device="cpu"):
        super().__init__(cfg, obs_shape, frame_stack, action_space, seeds, total_steps, device)
        low, high = action_space.low, action_space.high
        self.actor = self.add_net("actor", lambda: DeterministicActor(
            self.obs_dim, self.action_dim, cfg.hidden, low, high, cfg.batch_norm), cfg.actor_lr)
        self.critic = self.add_net("critic", lambda: StateActionCritic(
            self.obs_dim, self.action_dim, cfg.hidden, cfg.critic_action_layer, cfg.batch_norm),
            cfg.lr, weight_decay=cfg.critic_weight_decay)

    # ------------------------------------------------------------------------------------------ acting
    @torch.no_grad()
    def greedy(self, obs: torch.Tensor, gens=None) -> torch.Tensor:
        """mu(x) [M, B, du]: the actor is the maximizer (no search, so no random numbers)."""
        return self.actor(obs)

    @torch.no_grad()
    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """Q(x, mu(x)) [M, B]: the critic at the actor's action, DDPG's stand-in for max_u Q."""
        obs = obs.to(self.device, torch.float32)
        return self.critic(obs, self.actor(obs))

    # ------------------------------------------------------------------------------------------ learning
    def _critic_loss(self, qp, qb, obs, action, y):
        """One member's critic loss: 1/N sum (y - Q(x, u))^2 (Lillicrap et al. 2016, Algorithm 1)."""
        q = self.critic.single(qp, obs, action, buffers=qb)
        return (q - y).pow(2).mean(), q.detach().mean()

    def _actor_loss(self, ap, ab, qp, qb, obs):
        """One member's actor loss -1/N sum Q(x, mu(x)); its gradient is the deterministic policy gradient."""
        q = self.critic.single(qp, obs, self.actor.single(ap, obs, buffers=ab), buffers=qb)
        return -q.mean(), q.detach().mean()

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            next_u = self.actor.call(self.targets["actor"], b.next_obs)
            y = b.reward + b.discount * self.critic.call(self.targets["critic"], b.next_obs, next_u)
        with self.train_mode("critic"):
            grads, td_loss, q_mean = member_grads(self._critic_loss, self.critic.params, self.critic.buffers,
                                                  b.obs, b.action, y)
        apply_grads(self.opts["critic"], self.critic.params, grads)
        # the actor follows the critic just updated (Algorithm 1's order); the critic is not trained here
        critic_params = {k: v.detach() for k, v in self.critic.params.items()}
        with self.train_mode("actor"):
            grads, _, actor_q = member_grads(self._actor_loss, self.actor.params, self.actor.buffers,
                                             critic_params, self.critic.buffers, b.obs)
        apply_grads(self.opts["actor"], self.actor.params, grads)
        for name, net in self.nets.items():
            polyak_update(self.targets[name], net.params, self.cfg.polyak_tau)
        return {"td_loss": td_loss.detach(), "q_batch_mean": q_mean, "actor_q": actor_q}


Config = DDPGConfig
Agent = DDPGAgent
