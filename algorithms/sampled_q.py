"""max_u Q(x, u) over a box of continuous actions by stochastic search, for any Q-network.

Levine, CS 285, "Q-learning with continuous actions", option 1 (stochastic optimization): the max in the
target and in the greedy policy is approximated by the best of sampled actions, either uniform samples
("not very accurate ... but do we care?") or the cross-entropy method, "works OK, for up to about 40
dimensions". QT-Opt (Kalashnikov et al. 2018) uses CEM for both the target and the policy.

Both functions search, for each of B states at once, for the best action; they are written for one member.
q_fn(x, u) takes x [B, K, obs_dim] (a broadcast view of the states: call ``.reshape`` rather than ``.view``
on it) and u [B, K, action_dim] and returns Q [B, K]. Gradients flow through q_fn if enabled: wrap calls that
build targets in torch.no_grad().
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

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
