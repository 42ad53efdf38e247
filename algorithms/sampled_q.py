"""max_u Q(x, u) over a box of continuous actions by stochastic search, for any Q-network.

Levine, CS 285, "Q-learning with continuous actions", option 1 (stochastic optimization): the max in the
target and in the greedy policy is approximated by the best of sampled actions, either uniform samples
("not very accurate ... but do we care?") or the cross-entropy method, "works OK, for up to about 40
dimensions". QT-Opt (Kalashnikov et al. 2018) uses CEM for both the target and the policy.

Both functions search, for each of B states at once, for the best action; they are written for one member.
q_fn(x, u) takes x [B, K, obs_dim] (a broadcast view of the states: call ``.reshape`` rather than ``.view``
on it) and u [B, K, action_dim] and returns Q [B, K]. Gradients flow through q_fn if enabled: wrap calls that
build targets in torch.no_grad().

Below them, ``SampledQAgent`` is Q-learning with a critic Q(x, u) whose max, in the target and when acting,
is one of these searches (``maximizer`` = uniform | cem).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from algorithms.continuous import ContinuousConfig, ContinuousQAgent, validate_common
from algorithms.members import apply_grads, member_grads, polyak_update, torch_generators
from algorithms.networks import StateActionCritic
from algorithms.replay import Batch

QFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Bounds = Sequence[float] | torch.Tensor


def _box(low: Bounds, high: Bounds, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low_t = torch.as_tensor(low, dtype=x.dtype, device=x.device).reshape(-1)
    high_t = torch.as_tensor(high, dtype=x.dtype, device=x.device).reshape(-1)
    if low_t.shape != high_t.shape or not bool((high_t > low_t).all()):
        raise ValueError("low and high must have the same length and high > low in every dimension")
    return low_t, high_t


def _evaluate(q_fn: QFunction, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    batch, k = u.shape[:2]
    q = q_fn(x.unsqueeze(1).expand(batch, k, x.shape[-1]), u)
    if q.shape != (batch, k):
        raise ValueError(f"q_fn must return [B, K] = {(batch, k)}, got {tuple(q.shape)}")
    return q


def _pick(u: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    best_q, i = q.max(dim=1)
    best_u = u.gather(1, i.view(-1, 1, 1).expand(-1, 1, u.shape[-1])).squeeze(1)
    return best_u, best_q


def sampled_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, n: int,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Best of n actions drawn uniformly from the box [low, high], for each state of x [B, obs_dim].

    Returns (best_u [B, action_dim], best_q [B]). Uses n Q evaluations per state.
    """
    low_t, high_t = _box(low, high, x)
    r = torch.rand((x.shape[0], n, low_t.numel()), generator=generator, device=generator.device,
                   dtype=x.dtype).to(x.device)
    u = low_t + (high_t - low_t) * r
    return _pick(u, _evaluate(q_fn, x, u))


def cem_max(q_fn: QFunction, x: torch.Tensor, low: Bounds, high: Bounds, *, generator: torch.Generator,
            iterations: int = 2, population: int = 64, elites: int = 6,
            init_std: Bounds | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy method: sample a diagonal Gaussian, refit it to the elites, repeat.

    iterations, population, elites: 2, 64, 6, QT-Opt's CEM (Kalashnikov et al. 2018: two iterations of
        64 samples, the Gaussian refit to the best 6).
    init_std: the initial standard deviation per action dimension; None (ours): half the box width, around
        the box centre, so the first population spreads over the whole box.
    Samples outside the box are clipped onto it (ours: keeps every evaluated action admissible).
    Returns the best evaluated sample over all iterations (ours, rather than the final mean, so that
    best_q is a value Q actually took): (best_u [B, action_dim], best_q [B]).
    Uses iterations * population Q evaluations per state.
    """
    if iterations < 1 or not 1 <= elites <= population:
        raise ValueError(f"need iterations >= 1 and 1 <= elites <= population, got iterations={iterations}, "
                         f"elites={elites}, population={population}")
    low_t, high_t = _box(low, high, x)
    batch, dim = x.shape[0], low_t.numel()
    mean = ((low_t + high_t) / 2).expand(batch, dim)
    if init_std is None:
        std = ((high_t - low_t) / 2).expand(batch, dim)
    else:
        std = torch.as_tensor(init_std, dtype=x.dtype, device=x.device).expand(batch, dim)
    best_u = mean.clone()
    best_q = torch.full((batch,), -torch.inf, dtype=x.dtype, device=x.device)
    for _ in range(iterations):
        eps = torch.randn((batch, population, dim), generator=generator, device=generator.device,
                          dtype=x.dtype).to(x.device)
        u = torch.clamp(mean.unsqueeze(1) + std.unsqueeze(1) * eps, low_t, high_t)
        q = _evaluate(q_fn, x, u)
        top_q, top_i = q.topk(elites, dim=1)
        elite_u = u.gather(1, top_i.unsqueeze(-1).expand(-1, -1, dim))
        # Maximum-likelihood refit of the Gaussian to the elites (the cross-entropy update).
        mean = elite_u.mean(dim=1)
        std = elite_u.std(dim=1, correction=0)
        better = top_q[:, 0] > best_q
        best_u = torch.where(better.unsqueeze(-1), elite_u[:, 0], best_u)
        best_q = torch.where(better, top_q[:, 0], best_q)
    return best_u, best_q


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


class SampledQAgent(ContinuousQAgent):
    """A critic Q(x, u) per member and its Polyak-averaged target; every max over actions is a search.

    Searches draw their random numbers per member (streams ``act`` when acting, ``target`` in updates,
    ``value`` for value estimates), so each member is searched on its own: a loop over members around the
    batched search, outside any gradient.
    """

    def __init__(self, cfg: SampledQConfig, obs_shape, frame_stack, action_space, seeds, total_steps,
                 device="cpu"):
        super().__init__(cfg, obs_shape, frame_stack, action_space, seeds, total_steps, device)
        for stream in ("target", "value"):
            self.streams[stream] = torch_generators(seeds, stream)
        self.q = self.add_net("q", lambda: StateActionCritic(self.obs_dim, self.action_dim, cfg.hidden, 0,
                                                             cfg.batch_norm), cfg.lr)

    @torch.no_grad()
    def maximize(self, params, obs: torch.Tensor, gens) -> tuple[torch.Tensor, torch.Tensor]:
        """(argmax [M, B, du], max [M, B]) of each member's Q(x, .) over the action box, by search."""
        c, low, high = self.cfg, self.low.to(self.device), self.high.to(self.device)
        best_u, best_q = [], []
        for k in range(self.M):
            p = {n: t[k] for n, t in params.items()}
            b = {n: t[k] for n, t in self.q.buffers.items()}

            def q_fn(x, u, p=p, b=b):
                flat = self.q.single(p, x.reshape(-1, x.shape[-1]), u.reshape(-1, u.shape[-1]), buffers=b)
                return flat.reshape(u.shape[:2])

            if c.maximizer == "uniform":
                u, q = sampled_max(q_fn, obs[k], low, high, c.num_samples, gens[k])
            else:
                u, q = cem_max(q_fn, obs[k], low, high, generator=gens[k], iterations=c.cem_iterations,
                               population=c.cem_population, elites=c.cem_elites)
            best_u.append(u)
            best_q.append(q)
        return torch.stack(best_u), torch.stack(best_q)

    def greedy(self, obs: torch.Tensor, gens) -> torch.Tensor:
        return self.maximize(self.q.params, obs, gens)[0]

    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """The searched max_u Q(x, u) [M, B] (a lower bound on the true max of the network)."""
        return self.maximize(self.q.params, obs.to(self.device, torch.float32), self.streams["value"])[1]

    def _loss(self, p, buffers, obs, action, y):
        """One member's loss 1/N sum (y - Q(x, u))^2."""
        q = self.q.single(p, obs, action, buffers=buffers)
        return (q - y).pow(2).mean(), q.detach().mean()

    def update(self, b: Batch) -> dict[str, torch.Tensor]:
        y = b.reward + b.discount * self.maximize(self.targets["q"], b.next_obs, self.streams["target"])[1]
        with self.train_mode("q"):
            grads, loss, q_mean = member_grads(self._loss, self.q.params, self.q.buffers, b.obs, b.action, y)
        apply_grads(self.opts["q"], self.q.params, grads)
        polyak_update(self.targets["q"], self.q.params, self.cfg.polyak_tau)
        return {"td_loss": loss.detach(), "q_batch_mean": q_mean}


Config = SampledQConfig
Agent = SampledQAgent
