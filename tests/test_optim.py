"""RMSprop as DeepMind ran it (algorithms/optim.py), checked on hand-computed steps."""

import copy
import math

import pytest
import torch

from algorithms.dqn import Agent, DQNConfig
from algorithms.optim import NATURE_EPS_MEAN_GRADIENT, CenteredRMSprop


def _steps(opt_factory, grads):
    p = torch.zeros(1, requires_grad=True)
    opt = opt_factory([p])
    out = []
    for g in grads:
        p.grad = torch.tensor([g])
        opt.step()
        out.append(p.item())
    return out


def test_centered_rmsprop_two_steps_put_eps_inside_the_square_root():
    # lr 0.1, alpha 0.5, eps 0.01, gradients 1 then 3, by hand:
    # step 1: g2 = 0.5, g_bar = 0.5, var = 0.25; delta = -0.1 * 1 / sqrt(0.26)
    # step 2: g2 = 0.25 + 4.5 = 4.75, g_bar = 0.25 + 1.5 = 1.75, var = 1.6875; delta = -0.1 * 3 / sqrt(1.6975)
    p1 = -0.1 / math.sqrt(0.26)
    p2 = p1 - 0.3 / math.sqrt(1.6975)
    got = _steps(lambda ps: CenteredRMSprop(ps, lr=0.1, alpha=0.5, eps=0.01), [1.0, 3.0])
    assert got == pytest.approx([p1, p2], rel=1e-6)


def test_uncentered_rmsprop_step_divides_by_root_of_second_moment_plus_eps():
    got = _steps(lambda ps: CenteredRMSprop(ps, lr=0.1, alpha=0.5, eps=0.01, centered=False), [1.0])
    assert got == pytest.approx([-0.1 / math.sqrt(0.51)], rel=1e-6)


def test_rmsprop_state_dict_round_trips_to_the_same_next_step():
    a = torch.zeros(3, requires_grad=True)
    opt = CenteredRMSprop([a], lr=0.01)
    a.grad = torch.tensor([1.0, -2.0, 0.5])
    opt.step()
    b = a.detach().clone().requires_grad_(True)
    opt_b = CenteredRMSprop([b], lr=0.01)
    opt_b.load_state_dict(copy.deepcopy(opt.state_dict()))  # as a checkpoint file would
    for p, o in ((a, opt), (b, opt_b)):
        p.grad = torch.tensor([0.3, 0.1, -1.0])
        o.step()
    assert torch.equal(a, b)


def test_nature_eps_is_001_rescaled_from_a_summed_to_a_mean_minibatch_gradient():
    # The same step for G = 32 g with eps 0.01 and for g with the rescaled eps.
    g = [0.002, -0.001, 0.004]
    summed = _steps(lambda ps: CenteredRMSprop(ps, lr=1e-3, eps=0.01), [32 * x for x in g])
    mean = _steps(lambda ps: CenteredRMSprop(ps, lr=1e-3, eps=NATURE_EPS_MEAN_GRADIENT), g)
    assert mean == pytest.approx(summed, rel=1e-6)


def test_dqn_default_rmsprop_step_is_deepminds_centered_eps_inside_sqrt_step():
    agent = Agent(DQNConfig(), (4,), 1, 2, [0, 1], 1000, "cpu")
    params = list(agent.head.parameters())
    before = [p.detach().clone() for p in params]
    c = 1e-3
    for p in params:
        p.grad = torch.full_like(p, c)
    agent.opt.step()
    # one step from zero state, alpha 0.95: g2 = 0.05 c^2, g_bar = 0.05 c, var = 0.05 c^2 - 0.0025 c^2
    expected = -2.5e-4 * c / math.sqrt(0.0475 * c * c + 0.01 / 32**2)
    for p, b in zip(params, before, strict=True):
        assert torch.allclose(p.detach() - b, torch.full_like(b, expected), rtol=1e-4, atol=0)
