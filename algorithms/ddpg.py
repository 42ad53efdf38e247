"""DDPG: Q-learning whose max over actions is taken by a learned maximizer, for M members at once.

Lillicrap et al. 2016, "Continuous control with deep reinforcement learning" (ICLR), Algorithm 1; Levine,
CS 285, "option 3: learn an approximate maximizer". An actor mu(x) is trained to output argmax_u Q(x, u),
so the max in the target is Q'(x', mu'(x')):

    critic:  minimize (Q(x, u) - y)^2,  y = r + gamma Q'(x', mu'(x'))    (target networks Q', mu')
    actor:   ascend Q(x, mu(x)): the gradient grad_u Q(x, u)|_{u = mu(x)} grad_theta mu(x)
    targets: Polyak averaging with tau after every update

Q-learning itself is qlearning.py's; this file is the actor-critic head (the learned maximizer).
Defaults: Lillicrap et al. 2016, Sec. 7 (400-300 ReLU networks, Adam 1e-4 / 1e-3, critic weight decay 1e-2,
tau 0.001, minibatch 64, replay 10^6, OU noise theta 0.15, sigma 0.2), unless a field says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from algorithms.continuous import RENAMED, ContinuousAgent, ContinuousConfig, validate_common  # noqa: F401
from algorithms.members import batch_members
from algorithms.networks import DeterministicActor, StateActionCritic
from algorithms.qlearning import Head


@dataclass
class DDPGConfig(ContinuousConfig):
    """DDPG hyperparameters: the shared continuous-action settings plus the actor's."""

    hidden: list[int] = field(default_factory=lambda: [400, 300])
    """Hidden widths of actor and critic (Lillicrap et al. 2016, Sec. 7: 400 and 300 units). Gu et al. 2016
    ran their DDPG baseline with NAF's 2x200 networks (Sec. 6): --set hidden=200,200."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (Lillicrap et al. 2016, Sec. 7); ``lr`` is the critic's."""
    critic_weight_decay: float = 0.01
    """L2 weight decay of the critic (Lillicrap et al. 2016, Sec. 7), relative to their loss (y - Q)^2."""
    policy_period: int = 1
    """Gradient updates between actor updates; the target networks are updated with the actor. 1: every update
    (Lillicrap et al. 2016); 2: TD3's delayed policy updates (Fujimoto et al. 2018), CleanRL's DDPG default."""
    critic_action_layer: int = 1
    """Hidden layer whose input also gets the action: 1, "actions were not included until the 2nd hidden
    layer of Q" (Lillicrap et al. 2016, Sec. 7); 0 feeds [x, u] to the first layer."""


PRESETS: dict[str, dict] = {}  # the paper's settings are MuJoCo settings already


def validate(cfg: DDPGConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_common(cfg)
    if cfg.actor_lr <= 0:
        errors.append(f"actor_lr={cfg.actor_lr}: must be > 0")
    if cfg.policy_period <= 0:
        errors.append(f"policy_period={cfg.policy_period}: must be > 0")
    if cfg.critic_weight_decay < 0:
        errors.append(f"critic_weight_decay={cfg.critic_weight_decay}: must be >= 0")
    if not 0 <= cfg.critic_action_layer < max(1, len(cfg.hidden)):
        errors.append(f"critic_action_layer={cfg.critic_action_layer}: valid: 0 .. {len(cfg.hidden) - 1} "
                      f"(a hidden layer of hidden={cfg.hidden})")
    return errors


class ActorCriticHead(Head):
    """A critic Q(x, u) whose max is taken by a learned maximizer, the actor mu(x) (a deterministic policy).

    q = Q(x, u); greedy = mu(x); q_max = Q(x, mu(x)), DDPG's stand-in for max_u Q. The actor is trained by
    ``policy_loss`` = -mean Q(x, mu(x)) per member, whose gradient is the deterministic policy gradient
    grad_u Q(x, u)|_{u = mu(x)} grad_theta mu(x); the critic is not trained by it.
    """

    def __init__(self, actor, critic):
        super().__init__()
        self.actor, self.critic = actor, critic
        self._critic_params = list(critic.parameters())

    def q(self, obs, action):
        return self.critic(obs, action)

    def greedy(self, obs, gens=None):
        return self.actor(obs)

    def q_max(self, obs, gens=None):
        return self.critic(obs, self.actor(obs))

    def q_parameters(self):
        return list(self._critic_params)

    def policy_parameters(self):
        return list(self.actor.parameters())

    def policy_loss(self, obs):
        critic_params = self._critic_params
        for p in critic_params:  # the actor's loss trains the actor only: no critic gradients to compute
            p.requires_grad_(False)
        self.actor.train()
        try:
            return -self.critic(obs, self.actor(obs)).mean(1)
        finally:
            self.actor.eval()
            for p in critic_params:
                p.requires_grad_(True)


class DDPGAgent(ContinuousAgent):
    """Q-learning (qlearning.py) with an actor-critic head: Lillicrap et al. 2016, Algorithm 1."""

    def make_head(self, obs_shape, frame_stack, action_space, seeds) -> ActorCriticHead:
        c, low, high = self.cfg, action_space.low, action_space.high
        actor = batch_members(lambda: DeterministicActor(self.obs_dim, self.action_dim, c.hidden, low, high,
                                                         c.batch_norm), seeds, self.device, stream="init/actor")
        critic = batch_members(lambda: StateActionCritic(self.obs_dim, self.action_dim, c.hidden,
                                                         c.critic_action_layer, c.batch_norm),
                               seeds, self.device, stream="init/critic")
        return ActorCriticHead(actor, critic)

    def q_weight_decay(self) -> float:
        # The loss here is 1/2 (y - Q)^2, half of Lillicrap et al.'s; halving the decay keeps their ratio of
        # data gradient to decay, and Adam's step is invariant to the common factor.
        return self.cfg.critic_weight_decay / 2

    def policy_lr(self) -> float:
        return self.cfg.actor_lr

    def policy_due(self) -> bool:
        return self.updates % self.cfg.policy_period == 0


Config = DDPGConfig
Agent = DDPGAgent
