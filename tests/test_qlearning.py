"""The shared Q-learner: targets for every head, the update rate, per-member divergence, optimizers."""

import math
from fractions import Fraction

import gymnasium as gym
import numpy as np
import pytest
import torch

from algorithms.naf import NAFAgent, NAFConfig
from algorithms.networks import make_q_network
from algorithms.qlearning import MemberAdam, updates_due
from algorithms.replay import Batch
from experiments.config import ConfigError, build
from experiments.runner import Runner


def test_updates_due_gives_one_update_every_fourth_step_and_five_after_every_step():
    assert [updates_due(Fraction(1, 4), s) for s in range(1, 13)] == [0, 0, 0, 1] * 3
    assert [updates_due(Fraction(5), s) for s in range(1, 4)] == [5, 5, 5]
    assert sum(updates_due(Fraction(1, 3), s) for s in range(1, 301)) == 100



def test_double_naf_targets_value_the_online_greedy_action_with_the_target_network():
    """y = r + discount * Q_target(x', mu_online(x')) for double; r + discount * V_target(x') otherwise."""
    space = gym.spaces.Box(-1.0, 1.0, (2,))
    batch = Batch(obs=torch.randn(2, 5, 3), action=torch.rand(2, 5, 2) * 2 - 1, reward=torch.randn(2, 5),
                  discount=torch.full((2, 5), 0.9), next_obs=torch.randn(2, 5, 3), index=None,
                  weight=torch.ones(2, 5))
    for double in (False, True):
        agent = NAFAgent(NAFConfig(double=double, hidden=[8]), (3,), 1, space, [0, 1], 100)
        with torch.no_grad():
            for p in agent.target.parameters():  # a target network unlike the online one
                p.add_(0.3)
            y = agent.targets(batch)
            net, target = agent.head.net, agent.target.net
            if double:
                want = batch.reward + 0.9 * target(batch.next_obs, net.greedy(batch.next_obs))
            else:
                want = batch.reward + 0.9 * target.value(batch.next_obs)
        torch.testing.assert_close(y, want)
    assert not torch.allclose(target.value(batch.next_obs), target(batch.next_obs, net.greedy(batch.next_obs)))


def test_renamed_train_period_is_an_error_naming_updates_per_step():
    with pytest.raises(ConfigError, match="train_period: renamed; use updates_per_step"):
        build("dqn", "CartPole-v1", [0], 100, ["train_period=4"])


def test_dueling_scales_the_gradient_entering_the_torso_by_one_over_sqrt_2():
    """Wang et al. 2016, Sec. 4.2; the forward pass is unchanged."""
    torch.manual_seed(0)
    plain = make_q_network((4,), 1, 3, [8, 8], dueling=True)
    scaled = make_q_network((4,), 1, 3, [8, 8], dueling=True, dueling_grad_scale=1 / math.sqrt(2))
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(6, 4)
    torch.testing.assert_close(plain(x), scaled(x), rtol=0, atol=0)
    plain(x).pow(2).sum().backward()
    scaled(x).pow(2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), scaled.parameters(), strict=True):
        factor = 1 / math.sqrt(2) if name.startswith("torso.") else 1.0
        torch.testing.assert_close(q.grad, p.grad * factor)


def test_member_adam_fast_step_is_torch_adam_and_survives_a_state_dict_round_trip():
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(3, 4, 5)), torch.nn.Parameter(torch.randn(3, 5))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ref = torch.optim.Adam(a, lr=1e-2, eps=1e-6, weight_decay=0.1)
    fast = MemberAdam(b, lr=1e-2, eps=1e-6, weight_decay=0.1)
    for i in range(6):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        fast.fast_step()
        if i == 2:
            state = fast.state_dict()
            fast = MemberAdam(b, lr=1e-2, eps=1e-6, weight_decay=0.1)
            fast.load_state_dict(state)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


SETS = ["learning_starts=100", "batch_size=32", "target_period=100", "eval_period=200", "eval_episodes=2",
        "log_period=100", "threads=1"]


def _rows(state, seed):
    return [r[5:] for r in state["rows"] if r[5] == seed and r[9] != "steps_per_second"]


def test_divergence_marks_exactly_the_members_with_a_non_finite_metric_even_when_finite_values_overflow_a_sum():
    """The check first sums every metric (cheap); finite values whose sum overflows to inf must not mark anyone,
    and a NaN or an infinity marks its own member only."""
    agent = Runner(build("dqn", "CartPole-v1", [0, 1, 2], 400, SETS), torch.device("cpu")).agent
    big = torch.tensor([3e38, 3e38, 3e38])
    assert math.isinf(big.sum())
    agent._check_divergence({"td_loss": big, "q_batch_mean": torch.ones(3)})
    assert agent.diverged.tolist() == [False, False, False] and agent.n_diverged == 0
    agent._check_divergence({"td_loss": big, "q_batch_mean": torch.tensor([1.0, float("nan"), 1.0])})
    assert agent.diverged.tolist() == [False, True, False] and agent.n_diverged == 1
    agent._check_divergence({"td_loss": torch.tensor([float("inf"), 0.0, 0.0]), "q_batch_mean": torch.ones(3)})
    assert agent.diverged.tolist() == [True, True, False] and agent.n_diverged == 2


def test_a_diverged_member_is_frozen_and_flagged_while_the_others_train_as_if_alone():
    cfg = build("dqn", "CartPole-v1", [0, 1, 2], 400, SETS)
    runner = Runner(cfg, torch.device("cpu"))
    with torch.no_grad():  # member 0's network returns NaN from the start: its first loss is not finite
        runner.agent.head.net.get_parameter("head.2.bias")[0] = float("nan")
    *_, (_, state) = runner.train(None)
    alone = Runner(build("dqn", "CartPole-v1", [1, 2], 400, SETS), torch.device("cpu"))
    *_, (_, alone_state) = alone.train(None)
    assert state["status"] == "complete" and state["diverged_seeds"] == [0]
    zero = [r for r in state["rows"] if r[5] == 0 and r[6] >= 100]  # learning starts at 100
    assert [r[9] for r in zero] == ["diverged"] and zero[0][10] == 1.0  # one row, then nothing
    for seed in (1, 2):
        got, want = _rows(state, seed), _rows(alone_state, seed)
        assert [r[:-1] for r in got] == [r[:-1] for r in want]
        np.testing.assert_allclose([r[-1] for r in got], [r[-1] for r in want], rtol=1e-6)
    frozen = runner.agent.head.net.get_parameter("head.0.weight")[0]
    # frozen since its divergence (the update that diverged already wrote NaN into some weights)
    torch.testing.assert_close(frozen, runner.agent._frozen["net.head.0.weight"][0], rtol=0, atol=0,
                               equal_nan=True)
