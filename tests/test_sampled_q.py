"""Stochastic max over continuous actions (Levine CS 285 option 1; QT-Opt's CEM) on concave quadratics."""

import torch

from algorithms.sampled_q import cem_max, sampled_max

STATES, OBS = 256, 5


def _problem(action_dim: int, seed: int = 0):
    """Q(x, u) = b(x) - (u - a(x))^T W (u - a(x)) with a(x) inside the box [-1, 1]^du: max b(x) at a(x)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(OBS, action_dim, generator=g)
    root = torch.randn(action_dim, action_dim, generator=g)
    w = root @ root.T / action_dim + 0.5 * torch.eye(action_dim)
    x = torch.randn(STATES, OBS, generator=g)

    def argmax(xx):
        return 0.8 * torch.tanh(xx @ mix)

    def q_fn(xx, u):
        d = u - argmax(xx)
        return xx.sum(-1) - ((d @ w) * d).sum(-1)

    return q_fn, x, argmax(x), x.sum(-1), [-1.0] * action_dim, [1.0] * action_dim


def test_sampled_max_finds_the_maximum_of_a_concave_quadratic_with_enough_samples():
    q_fn, x, u_star, q_star, low, high = _problem(action_dim=2)
    u, q = sampled_max(q_fn, x, low, high, n=4096, generator=torch.Generator().manual_seed(1))
    assert u.shape == (STATES, 2) and q.shape == (STATES,)
    assert torch.allclose(q, q_fn(x.unsqueeze(1), u.unsqueeze(1)).squeeze(1))  # best_q is Q at best_u
    assert float((q_star - q).max()) < 0.01
    assert float((u - u_star).abs().max()) < 0.1


def test_cem_finds_the_maximum_of_a_concave_quadratic():
    q_fn, x, u_star, q_star, low, high = _problem(action_dim=3)
    u, q = cem_max(q_fn, x, low, high, generator=torch.Generator().manual_seed(2), iterations=5,
                   population=200, elites=20)
    assert bool((q <= q_star + 1e-6).all())
    assert float((q_star - q).max()) < 1e-3
    assert float((u - u_star).abs().max()) < 0.05


def test_cem_beats_uniform_sampling_at_equal_q_evaluations():
    # QT-Opt's CEM (2 x 64 samples) against 128 uniform samples, over many states.
    q_fn, x, _, q_star, low, high = _problem(action_dim=4, seed=3)
    _, q_uniform = sampled_max(q_fn, x, low, high, n=128, generator=torch.Generator().manual_seed(4))
    _, q_cem = cem_max(q_fn, x, low, high, generator=torch.Generator().manual_seed(5))
    gap_uniform, gap_cem = q_star - q_uniform, q_star - q_cem
    assert float(gap_cem.mean()) < 0.6 * float(gap_uniform.mean())
    assert float((gap_cem < gap_uniform).float().mean()) > 0.7


def test_search_is_reproducible_from_the_generator_seed():
    q_fn, x, _, _, low, high = _problem(action_dim=2)
    a = cem_max(q_fn, x, low, high, generator=torch.Generator().manual_seed(6))
    b = cem_max(q_fn, x, low, high, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
