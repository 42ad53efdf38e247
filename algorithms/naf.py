"""Normalized advantage functions (NAF): Q-learning with a Q-function whose max over actions is analytic.

Gu, Lillicrap, Sutskever, Levine 2016, "Continuous Deep Q-Learning with Model-based Acceleration" (ICML),
Sec. 4, eqs. 2-3:

    Q(x, u) = V(x) + A(x, u),   A(x, u) = -1/2 (u - mu(x))^T P(x) (u - mu(x)),   P(x) = L(x) L(x)^T

with L lower-triangular and a positive diagonal, so P is positive definite and A <= 0 with equality only at
u = mu(x). Hence argmax_u Q = mu(x) and max_u Q = V(x) in closed form: the max in the Q-learning target is
exact and costs one forward pass (Levine, CS 285, "option 2: a function class that is easy to maximize").

The file reads top to bottom: the quadratic head, the network (torso and head), then the agent, Q-learning
(qlearning.py) with that network (Gu et al. 2016, Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from algorithms.continuous import RENAMED, ContinuousAgent, ContinuousConfig, validate_common  # noqa: F401
from algorithms.members import batch_members
from algorithms.qlearning import Head

# ---------------------------------------------------------------------------------------------------------
# The quadratic head
# ---------------------------------------------------------------------------------------------------------

DIAGONALS = ("exp", "softplus")


class NAFHead(nn.Module):
    """Features h -> V(h), mu(h), L(h): Q of an action, the maximizing action and the maximal value.

    ``evaluate(h, u)`` (Q of a given action), ``greedy(h)`` (the maximizing action) and ``q_max(h)`` (the
    maximal value) are what the Q-learner's heads offer (qlearning.Head; ``QuadraticHead`` below wraps this
    network for the learner). Inputs may carry any leading batch dimensions (the member axis included); ``u``
    has the same leading dimensions as ``h``.

    action_low, action_high: bounds of the action box. Given, mu = centre + half_range * tanh(.), so the
        greedy action is always admissible (the squashing of DDPG's actor, Lillicrap et al. 2016, Sec. 7)
        and the unconstrained argmax mu is also the argmax over the box. None: mu is an unbounded linear
        output, as written in Gu et al. 2016, eq. 2.
    diagonal: how the raw diagonal of L is made positive. "exp": Gu et al. 2016, Sec. 4 ("with the
        diagonal terms exponentiated"). "softplus": ours, an option for when exp's growth makes P blow up.
    """

    def __init__(self, in_features: int, action_dim: int,
                 action_low: Sequence[float] | torch.Tensor | None = None,
                 action_high: Sequence[float] | torch.Tensor | None = None, diagonal: str = "exp"):
        super().__init__()
        if diagonal not in DIAGONALS:
            raise ValueError(f"diagonal must be one of {DIAGONALS}, got {diagonal!r}")
        if (action_low is None) != (action_high is None):
            raise ValueError("give both action_low and action_high, or neither (unbounded mu)")
        self.action_dim = action_dim
        self.diagonal = diagonal
        self.value_layer = nn.Linear(in_features, 1)
        self.mu_layer = nn.Linear(in_features, action_dim)
        # One linear layer for all entries of L: the first action_dim outputs are the raw diagonal, the rest
        # the strictly lower triangle, row by row.
        self.l_layer = nn.Linear(in_features, action_dim * (action_dim + 1) // 2)
        self.bounded = action_low is not None
        if self.bounded:
            low = torch.as_tensor(action_low, dtype=torch.float32).reshape(action_dim)
            high = torch.as_tensor(action_high, dtype=torch.float32).reshape(action_dim)
            if not bool((high > low).all()):
                raise ValueError("action_high must exceed action_low in every dimension")
            self.register_buffer("action_centre", (high + low) / 2)
            self.register_buffer("action_half_range", (high - low) / 2)

    def value(self, h: torch.Tensor) -> torch.Tensor:
        """V(h): the state value, shape [...]."""
        return self.value_layer(h).squeeze(-1)

    # The max of a quadratic head is its value: the name shared with discrete heads.
    q_max = value

    def greedy(self, h: torch.Tensor) -> torch.Tensor:
        """mu(h) = argmax_u Q(h, u), shape [..., action_dim]."""
        z = self.mu_layer(h)
        if not self.bounded:
            return z
        return self.action_centre + self.action_half_range * torch.tanh(z)

    def lower_triangular(self, h: torch.Tensor) -> torch.Tensor:
        """L(h), lower-triangular with a positive diagonal, shape [..., action_dim, action_dim]."""
        n = self.action_dim
        entries = self.l_layer(h)
        raw_diag, off = entries[..., :n], entries[..., n:]
        diag = torch.exp(raw_diag) if self.diagonal == "exp" else nn.functional.softplus(raw_diag)
        # Placing the off-diagonal entries with a constant 0/1 matrix (instead of index assignment) keeps
        # the head a pure function of its input, whatever its leading dimensions.
        rows, cols = torch.tril_indices(n, n, offset=-1, device=h.device)
        place = torch.zeros(off.shape[-1], n * n, dtype=h.dtype, device=h.device)
        place[torch.arange(off.shape[-1], device=h.device), rows * n + cols] = 1
        strict = (off @ place).unflatten(-1, (n, n))
        return strict + torch.diag_embed(diag)

    def precision(self, h: torch.Tensor) -> torch.Tensor:
        """P(h) = L L^T, symmetric positive definite, shape [..., action_dim, action_dim]."""
        lower = self.lower_triangular(h)
        return lower @ lower.transpose(-1, -2)

    def forward(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Q(h, u) = V(h) - 1/2 (u - mu)^T P (u - mu), shape [...]."""
        d = u - self.greedy(h)
        # (u - mu)^T L L^T (u - mu) = |L^T (u - mu)|^2: no explicit P, and never negative in floating point.
        y = (self.lower_triangular(h).transpose(-1, -2) @ d.unsqueeze(-1)).squeeze(-1)
        return self.value(h) - 0.5 * y.pow(2).sum(-1)

    # Q of a given action: the name shared with discrete heads.
    evaluate = forward


# ---------------------------------------------------------------------------------------------------------
# The network: the paper's torso under the quadratic head
# ---------------------------------------------------------------------------------------------------------

class NAFNetwork(nn.Module):
    """Observation x -> torso -> NAFHead; the same methods as the head, taking observations.

    hidden: (200, 200), "two layers of 200 rectified linear units" (Gu et al. 2016, Sec. 6).
    batch_norm: False, ours; Gu et al. 2016 (Sec. 6) chose batch normalization per task in their sweep.
        When on, it normalizes the observation and every hidden pre-activation, the placement of DDPG's
        critic below the action input (Lillicrap et al. 2016, Sec. 7); inputs must then be [batch, obs_dim].
    action_low, action_high, diagonal: see NAFHead.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (200, 200),
                 batch_norm: bool = False, action_low: Sequence[float] | torch.Tensor | None = None,
                 action_high: Sequence[float] | torch.Tensor | None = None, diagonal: str = "exp"):
        super().__init__()
        layers: list[nn.Module] = [nn.BatchNorm1d(obs_dim)] if batch_norm else []
        width = obs_dim
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            width = size
        self.torso = nn.Sequential(*layers)
        self.head = NAFHead(width, action_dim, action_low, action_high, diagonal)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Q(x, u), shape [...]."""
        return self.head(self.torso(x), u)

    evaluate = forward

    def greedy(self, x: torch.Tensor) -> torch.Tensor:
        """mu(x) = argmax_u Q(x, u)."""
        return self.head.greedy(self.torso(x))

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """V(x) = max_u Q(x, u)."""
        return self.head.value(self.torso(x))

    q_max = value

    def precision(self, x: torch.Tensor) -> torch.Tensor:
        """P(x), the curvature of -Q in the action."""
        return self.head.precision(self.torso(x))


# ---------------------------------------------------------------------------------------------------------
# The agent: Q-learning with the quadratic head (Gu et al. 2016, Algorithm 1)
# ---------------------------------------------------------------------------------------------------------


@dataclass
class NAFConfig(ContinuousConfig):
    """NAF hyperparameters: the shared continuous-action settings with Gu et al. 2016's values (Sec. 6)."""

    updates_per_step: float = 5.0
    """Gradient updates per environment step: I = 5 (Gu et al. 2016, Algorithm 1 and the Appendix's settings)."""
    lr: float = 1e-3
    """Adam learning rate: the middle of Gu et al. 2016's sweep {1e-4, 1e-3, 1e-2} (Sec. 6); the choice is ours."""
    diagonal: str = "exp"
    """How L's diagonal is made positive: exp (Gu et al. 2016, Sec. 4) or softplus (ours)."""


PRESETS: dict[str, dict] = {}  # Gu et al.'s settings are MuJoCo settings already


def validate(cfg: NAFConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_common(cfg)
    if cfg.diagonal not in DIAGONALS:
        errors.append(f"diagonal={cfg.diagonal!r}: valid: {', '.join(DIAGONALS)}")
    return errors


class QuadraticHead(Head):
    """The learner's head for NAF networks: q = Q(x, u), greedy = mu(x), q_max = V(x), all exact."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def q(self, obs, action):
        return self.net(obs, action)

    def greedy(self, obs, gens=None):
        return self.net.greedy(obs)

    def q_max(self, obs, gens=None):
        return self.net.value(obs)


class NAFAgent(ContinuousAgent):
    """Q-learning (qlearning.py) with the quadratic head: Gu et al. 2016, Algorithm 1.

    y = r + gamma V'(x') (the exact max of the target's Q), loss 1/2 (y - Q(x, u))^2, I updates per
    environment step, the target updated after each. The greedy action mu(x) is squashed into the action box
    (see NAFHead), so exploration noise is added to an admissible action and the sum clipped to the box.
    """

    def make_head(self, obs_shape, frame_stack, action_space, seeds) -> QuadraticHead:
        c = self.cfg
        net = batch_members(lambda: NAFNetwork(self.obs_dim, self.action_dim, c.hidden, c.batch_norm,
                                               action_space.low, action_space.high, c.diagonal),
                            seeds, self.device, stream="init/q")
        return QuadraticHead(net)


Config = NAFConfig
Agent = NAFAgent
