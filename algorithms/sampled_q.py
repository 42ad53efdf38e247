"""max_u Q(x, u) over a box of continuous actions by stochastic search, for any Q-network.

Levine, CS 285, "Q-learning with continuous actions", option 1 (stochastic optimization): the max in the
target and in the greedy policy is approximated by the best of sampled actions, either uniform samples
("not very accurate ... but do we care?") or the cross-entropy method, "works OK, for up to about 40
dimensions". QT-Opt (Kalashnikov et al. 2018) uses CEM for both the target and the policy.

The searches look, for each of B states of each of M members at once, for the best action; ``sampled_max``
and ``cem_max`` are their one-member forms. q_fn(x, u) takes x [M, B, K, obs_dim] (a broadcast view of the
states: call ``.reshape`` rather than ``.view`` on it) and u [M, B, K, action_dim] and returns Q [M, B, K].
Gradients flow through q_fn if enabled: wrap calls that build targets in torch.no_grad().

Below them, ``SampledQAgent`` is Q-learning with a critic Q(x, u) whose max, in the target and when acting,
is one of these searches (``maximizer`` = uniform | cem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from algorithms.continuous import RENAMED, ContinuousAgent, ContinuousConfig, validate_common  # noqa: F401
from algorithms.members import batch_members
from algorithms.networks import StateActionCritic
from algorithms.qlearning import Head

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Bounds = Sequence[float] | torch.Tensor


def _box(low: Bounds, high: Bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low_t = torch.as_tensor(low, dtype=x.dtype, device=x.device).reshape(-1)
    high_t = torch.as_tensor(high, dtype=x.dtype, device=x.device).reshape(-1)
    if low_t.shape != high_t.shape or not bool((high_t > low_t).all()):
        raise ValueError("low and high must have the same length and high > low in every dimension")
    return low_t, high_t


def _evaluate(q_fn: QFunction, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Q [M, B, K] of actions u [M, B, K, du] at states x [M, B, dx]."""
    q = q_fn(x.unsqueeze(2).expand(*u.shape[:3], x.shape[-1]), u)
    if q.shape != u.shape[:3]:
        raise ValueError(f"q_fn must return {tuple(u.shape[:3])}, got {tuple(q.shape)}")
    return q


def _pick(u: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best_q, i = q.max(dim=2)
    best_u = u.gather(2, i[..., None, None].expand(*i.shape, 1, u.shape[-1])).squeeze(2)
    return best_u, best_q


def _draw(gens: Sequence[torch.Generator], shape: Sequence[int], like: torch.Tensor, normal: bool) -> torch.Tensor:
    """[M, *shape] numbers, member k's from gens[k] only, in like's dtype and device."""
    draw = torch.randn if normal else torch.rand
    return torch.stack([draw(tuple(shape), generator=g, device=g.device, dtype=like.dtype) for g in gens]).to(
        like.device)


def member_sampled_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, n: int,
                       gens: Sequence[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of n actions drawn uniformly from the box [low, high], for each state of x [M, B, obs_dim], member
    k drawing from gens[k]; q_fn(x [M, B, K, dx], u [M, B, K, du]) -> [M, B, K].

    Returns (best_u [M, B, action_dim], best_q [M, B]). Uses n Q evaluations per state.
    """
    low_t, high_t = _box(low, high, x)
    u = low_t + (high_t - low_t) * _draw(gens, (x.shape[1], n, low_t.numel()), x, normal=False)
    return _pick(u, _evaluate(q_fn, x, u))


def member_cem_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, *, gens: Sequence[torch.Generator],
                   iterations: int = 2, population: int = 64, elites: int = 6,
                   init_std: Bounds | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy method for each state of x [M, B, obs_dim]: sample a diagonal Gaussian, refit it to the
    elites, repeat; member k draws from gens[k]; q_fn as in member_sampled_max.

    iterations, population, elites: 2, 64, 6, QT-Opt's CEM (Kalashnikov et al. 2018: two iterations of
        64 samples, the Gaussian refit to the best 6).
    init_std: the initial standard deviation per action dimension; None (ours): half the box width, around
        the box centre, so the first population spreads over the whole box.
    Samples outside the box are clipped onto it (ours: keeps every evaluated action admissible).
    Returns the best evaluated sample over all iterations (ours, rather than the final mean, so that
    best_q is a value Q actually took): (best_u [M, B, action_dim], best_q [M, B]).
    Uses iterations * population Q evaluations per state.
    """
    if iterations < 1 or not 1 <= elites <= population:
        raise ValueError(f"need iterations >= 1 and 1 <= elites <= population, got iterations={iterations}, "
                         f"elites={elites}, population={population}")
    low_t, high_t = _box(low, high, x)
    lead, dim = x.shape[:2], low_t.numel()
    mean = ((low_t + high_t) / 2).expand(*lead, dim)
    if init_std is None:
        std = ((high_t - low_t) / 2).expand(*lead, dim)
    else:
        std = torch.as_tensor(init_std, dtype=x.dtype, device=x.device).expand(*lead, dim)
    best_u = mean.clone()
    best_q = torch.full(lead, -torch.inf, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        eps = _draw(gens, (lead[1], population, dim), x, normal=True)
        u = torch.clamp(mean.unsqueeze(2) + std.unsqueeze(2) * eps, low_t, high_t)
        q = _evaluate(q_fn, x, u)
        top_q, top_i = q.topk(elites, dim=2)
        elite_u = u.gather(2, top_i.unsqueeze(-1).expand(*top_i.shape, dim))
        # Maximum-likelihood refit of the Gaussian to the elites (the cross-entropy update).
        mean = elite_u.mean(dim=2)
        std = elite_u.std(dim=2, correction=0)
        better = top_q[..., 0] > best_q
        best_u = torch.where(better.unsqueeze(-1), elite_u[..., 0, :], best_u)
        best_q = torch.where(better, top_q[..., 0], best_q)
    return best_u, best_q


def _one_member(q_fn: QFunction) -> QFunction:
    return lambda x, u: q_fn(x[0], u[0]).unsqueeze(0)


def sampled_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, n: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """member_sampled_max for one member: x [B, obs_dim], q_fn(x [B, K, dx], u [B, K, du]) -> [B, K];
    returns (best_u [B, action_dim], best_q [B])."""
    u, q = member_sampled_max(_one_member(q_fn), x.unsqueeze(0), low, high, n, [generator])
    return u[0], q[0]


def cem_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, *, generator: torch.Generator,
            iterations: int = 2, population: int = 64, elites: int = 6,
            init_std: Bounds | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """member_cem_max for one member (shapes as in sampled_max)."""
    u, q = member_cem_max(_one_member(q_fn), x.unsqueeze(0), low, high, gens=[generator], iterations=iterations,
                          population=population, elites=elites, init_std=init_std)
    return u[0], q[0]


# ---------------------------------------------------------------------------------------------------------
# The agent: Q-learning with a state-action critic and a searched max
# ---------------------------------------------------------------------------------------------------------

MAXIMIZERS = ("uniform", "cem")


@dataclass
class SampledQConfig(ContinuousConfig):
    """Q-learning with max_u Q by stochastic search: the shared continuous-action settings plus the search's."""

    maximizer: str = "uniform"
    """How max_u Q is taken, in the target and when acting: uniform (the best of ``num_samples`` uniform
    actions, Levine CS 285 option 1) or cem (cross-entropy method, Kalashnikov et al. 2018)."""
    num_samples: int = 128
    """Uniform samples per state. Ours: the 2 x 64 Q evaluations of CEM's defaults, so both searches cost the
    same."""
    cem_iterations: int = 2
    """CEM iterations (Kalashnikov et al. 2018, QT-Opt)."""
    cem_population: int = 64
    """CEM samples per iteration (Kalashnikov et al. 2018, QT-Opt)."""
    cem_elites: int = 6
    """Best samples the CEM Gaussian is refit to (Kalashnikov et al. 2018, QT-Opt)."""
    hidden: list[int] = field(default_factory=lambda: [200, 200])
    """Hidden widths of Q(x, u), with [x, u] at the input. Ours: the size of Gu et al. 2016's NAF networks, so
    the continuous_max suite compares ways of taking the max rather than network sizes."""


PRESETS: dict[str, dict] = {}


def validate(cfg: SampledQConfig) -> list[str]:
    """Problems with a config, each naming the key and the valid choices (empty when fine)."""
    errors = validate_common(cfg)
    if cfg.maximizer not in MAXIMIZERS:
        errors.append(f"maximizer={cfg.maximizer!r}: valid: {', '.join(MAXIMIZERS)}")
    for key in ("num_samples", "cem_iterations", "cem_population", "cem_elites"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if cfg.cem_elites > cfg.cem_population:
        errors.append(f"cem_elites={cfg.cem_elites}: must not exceed cem_population={cfg.cem_population}")
    return errors


class SearchHead(Head):
    """A critic Q(x, u) whose max over the action box is a stochastic search (``maximizer``), batched over
    members, each member drawing from its own generator."""

    def __init__(self, critic, cfg: SampledQConfig, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.critic, self.cfg = critic, cfg
        self.register_buffer("low", low.clone())
        self.register_buffer("high", high.clone())

    def q(self, obs, action):
        return self.critic(obs, action)

    @torch.no_grad()
    def search(self, obs: torch.Tensor, gens) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax [M, B, du], max [M, B]) of each member's Q(x, .) over the action box."""
        c = self.cfg
        if c.maximizer == "uniform":
            return member_sampled_max(self.critic, obs, self.low, self.high, c.num_samples, gens)
        return member_cem_max(self.critic, obs, self.low, self.high, gens=gens, iterations=c.cem_iterations,
                              population=c.cem_population, elites=c.cem_elites)

    def greedy(self, obs, gens=None):
        return self.search(obs, gens)[0]

    def q_max(self, obs, gens=None):
        """The searched max_u Q(x, u) (a lower bound on the true max of the network)."""
        return self.search(obs, gens)[1]


class SampledQAgent(ContinuousAgent):
    """Q-learning (qlearning.py) with a critic Q(x, u) and a searched max.

    Searches draw their random numbers per member (streams ``act`` when acting, ``target`` in updates,
    ``value`` for value estimates), so each member is searched on its own random numbers.
    """

    def make_head(self, obs_shape, frame_stack, action_space, seeds) -> SearchHead:
        c = self.cfg
        critic = batch_members(lambda: StateActionCritic(self.obs_dim, self.action_dim, c.hidden, 0, c.batch_norm),
                               seeds, self.device, stream="init/q")
        return SearchHead(critic, c, self.low.to(self.device), self.high.to(self.device))


Config = SampledQConfig
Agent = SampledQAgent
