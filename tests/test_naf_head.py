"""The NAF quadratic head (Gu et al. 2016, eqs. 2-3): P is SPD, mu is the argmax, the max is V."""

import numpy as np
import pytest
import torch

from algorithms.members import batch_members, member_state
from algorithms.naf import NAFHead, NAFNetwork

FEATURES, ACTIONS, BATCH = 7, 3, 32


def _head(**kwargs) -> NAFHead:
    torch.manual_seed(0)
    return NAFHead(FEATURES, ACTIONS, **kwargs).double()


def _features(seed: int = 1) -> torch.Tensor:
    return torch.randn(BATCH, FEATURES, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("diagonal", ["exp", "softplus"])
def test_precision_is_symmetric_positive_definite(diagonal):
    p = _head(diagonal=diagonal).precision(_features())
    assert torch.allclose(p, p.transpose(-1, -2), atol=1e-12)
    assert bool((torch.linalg.eigvalsh(p) > 0).all())


@pytest.mark.parametrize("bounds", [None, ([-2.0, -1.0, 0.0], [2.0, 1.0, 0.5])])
def test_greedy_action_is_the_argmax_and_the_max_is_v(bounds):
    kwargs = {} if bounds is None else {"action_low": bounds[0], "action_high": bounds[1]}
    head, h = _head(**kwargs), _features()
    mu = head.greedy(h).detach().requires_grad_(True)
    q_at_mu = head.evaluate(h, mu)
    (grad,) = torch.autograd.grad(q_at_mu.sum(), mu)
    assert torch.allclose(grad, torch.zeros_like(grad), atol=1e-10)
    assert torch.allclose(q_at_mu, head.value(h), atol=1e-12)
    assert torch.equal(head.q_max(h), head.value(h))
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        u = mu.detach() + torch.randn(mu.shape, generator=gen, dtype=torch.float64)
        assert bool((head(h, u) < head.value(h)).all())
    if bounds is not None:
        low, high = torch.tensor(bounds[0], dtype=torch.float64), torch.tensor(bounds[1], dtype=torch.float64)
        assert bool(((mu >= low) & (mu <= high)).all())


def test_q_matches_the_formula_computed_by_hand():
    head, h = _head(), _features()
    u = torch.randn(BATCH, ACTIONS, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = head(h, u).detach().numpy()
    with torch.no_grad():
        v = head.value_layer(h).numpy()[:, 0]
        mu = head.mu_layer(h).numpy()
        raw = head.l_layer(h).numpy()
    for b in range(BATCH):
        lower = np.diag(np.exp(raw[b, :ACTIONS]))
        off = iter(raw[b, ACTIONS:])
        for i in range(ACTIONS):  # strictly lower triangle, row by row
            for j in range(i):
                lower[i, j] = next(off)
        d = u[b].numpy() - mu[b]
        expected = v[b] - 0.5 * d @ (lower @ lower.T) @ d
        assert q[b] == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_network_runs_on_the_member_axis_like_the_single_member_module():
    seeds = [0, 1]
    net = batch_members(lambda: NAFNetwork(4, 2, hidden=(16, 16), action_low=[-1, -1], action_high=[1, 1]),
                        seeds)
    x = torch.randn(len(seeds), 5, 4, generator=torch.Generator().manual_seed(4))
    u = torch.rand(len(seeds), 5, 2, generator=torch.Generator().manual_seed(5)) * 2 - 1
    q, mu, v = net.evaluate(x, u), net.greedy(x), net.q_max(x)
    for k in range(len(seeds)):
        single = NAFNetwork(4, 2, hidden=(16, 16), action_low=[-1, -1], action_high=[1, 1])
        single.load_state_dict(member_state(net, k))
        assert torch.allclose(q[k], single(x[k], u[k]), atol=1e-6)
        assert torch.allclose(mu[k], single.greedy(x[k]), atol=1e-6)
        assert torch.allclose(v[k], single.value(x[k]), atol=1e-6)


def test_default_torso_is_two_hidden_layers_of_200_relu_with_optional_batch_norm():
    net = NAFNetwork(5, 2)
    linears = [m for m in net.torso if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [200, 200]
    bn = NAFNetwork(5, 2, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in bn.torso) == 3
    assert bn(torch.randn(8, 5), torch.randn(8, 2)).shape == (8,)
