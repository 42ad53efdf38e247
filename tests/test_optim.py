"""RMSprop as DeepMind ran it (algorithms/optim.py), checked on hand-computed steps."""

import copy
import math

import pytest
import torch

from algorithms.dqn import Agent, DQNConfig
from algorithms.optim import (
    NATURE_EPS_MEAN_GRADIENT,
    SQRT_EPS_MIN,
    SQRT_FLOOR,
    SQRT_SCALE,
    SQRT_UNSCALE,
    CenteredRMSprop,
    TorchRMSprop,
    sqrt_add_,
)


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


def test_sqrt_add_is_torchs_root_plus_eps_to_the_bit_including_zeros_and_subnormals():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(400_000, generator=g) * torch.logspace(-46, 31, 400_000)
    x = torch.cat([x[x < 2e31], torch.zeros(1_000), torch.tensor([-0.0, 1e-45, 1e-39, 1.17e-38, 2.0**-121, -1e-39,
                                                                   -2.0, float("inf"), float("nan")])])
    tiny = torch.finfo(torch.float32).tiny
    assert ((x > 0) & (x < tiny)).sum() > 1_000  # the subnormal range is exercised
    for eps in (0.01, 1e-8, SQRT_EPS_MIN, 1e-12):
        ours, torchs = sqrt_add_(x.clone(), eps), x.sqrt().add_(eps)
        assert bool(((ours == torchs) | (ours.isnan() & torchs.isnan())).all()), eps
        assert torch.equal(ours.isnan(), torchs.isnan()), eps
    # the root itself is torch's from 2^-121 on, where no sum with eps hides it
    big = x[x >= 2.0**-121]
    assert torch.equal(big.mul(SQRT_SCALE).add_(SQRT_FLOOR).sqrt_().mul_(SQRT_UNSCALE), big.sqrt())
    # the documented exception: torch's NaN for negative numbers in (-1.1e-44, 0) is eps here
    assert sqrt_add_(torch.tensor([-1e-45]), 0.01).item() == torch.tensor(0.01).item()


@pytest.mark.parametrize("centered", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_torch_rmsprop_matches_torch_bit_for_bit_through_subnormal_averages(centered, weight_decay):
    """Gradients that stop for half the weights: alpha 0.5 takes their averages through the subnormals
    (below 1.2e-38) to zero, where the scaled square root takes over; parameters and state stay torch's to the
    bit, and a state dict of either optimizer loads into the other."""
    g = torch.Generator().manual_seed(1)
    start = torch.randn(4, 64, generator=g)
    grads = [torch.randn(4, 64, generator=g) * (1.0 if t < 20 else torch.arange(64).lt(32).float())
             for t in range(200)]
    ps = [start.clone().requires_grad_() for _ in range(2)]
    kw = dict(lr=0.01, alpha=0.5, eps=0.01, centered=centered, weight_decay=weight_decay)
    ours, torchs = TorchRMSprop([ps[0]], **kw), torch.optim.RMSprop([ps[1]], **kw)
    tiny, subnormal_steps = torch.finfo(torch.float32).tiny, 0
    for t, grad in enumerate(grads):
        for p, opt in zip(ps, (ours, torchs), strict=True):
            p.grad = grad.clone()
            opt.step()
        square_avg = ours.state[ps[0]]["square_avg"]
        subnormal_steps += bool(((square_avg > 0) & (square_avg < tiny)).any())
        if t == 100:  # swap state dicts half-way: a checkpoint of either resumes in the other
            a, b = copy.deepcopy(ours.state_dict()), copy.deepcopy(torchs.state_dict())
            ours.load_state_dict(b)
            torchs.load_state_dict(a)
    assert torch.equal(ps[0], ps[1])
    # the subnormal path was taken (weight decay keeps every gradient, and so every average, normal)
    assert subnormal_steps > 10 if weight_decay == 0 else subnormal_steps == 0
    for key, value in torchs.state[ps[1]].items():
        assert torch.equal(ours.state[ps[0]][key], value), key
