"""DQN family: hand-computed targets, dueling aggregation, the member promise, and learning CartPole."""

import numpy as np
import pytest
import torch

from algorithms.dqn import td_loss, td_targets
from algorithms.members import (
    MemberConv2d,
    MemberLinear,
    batch_members,
    clip_member_grad_norm,
    member_grads,
    member_state,
    params_hash,
    polyak_update,
)
from algorithms.networks import dueling_aggregate, make_q_network
from experiments.config import build
from experiments.runner import Runner


def test_dqn_target_takes_max_of_target_network():
    q_next_target = torch.tensor([[1.0, 5.0, 2.0], [0.5, -1.0, 3.0]])
    q_next_online = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])  # ignored by DQN
    y = td_targets(q_next_online, q_next_target, torch.tensor([1.0, 0.0]), torch.tensor([0.9, 0.0]), double=False)
    assert y.tolist() == pytest.approx([1.0 + 0.9 * 5.0, 0.0])


def test_double_target_uses_online_argmax_and_target_value():
    q_next_target = torch.tensor([[1.0, 5.0, 2.0], [0.5, -1.0, 3.0]])
    q_next_online = torch.tensor([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    y = td_targets(q_next_online, q_next_target, torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.25]), double=True)
    # online argmax: action 0 then action 1; their target values are 1.0 and -1.0
    assert y.tolist() == pytest.approx([1.0 + 0.5 * 1.0, 2.0 + 0.25 * -1.0])


def test_dueling_aggregation_subtracts_mean_advantage():
    v = torch.tensor([[2.0]])
    a = torch.tensor([[1.0, 2.0, 6.0]])
    assert dueling_aggregate(v, a).tolist() == [[2.0 + 1.0 - 3.0, 2.0 + 2.0 - 3.0, 2.0 + 6.0 - 3.0]]
    net = make_q_network((4,), 1, 3, [16], dueling=True)
    x = torch.randn(5, 4)
    h = net.torso(x)
    expected = net.value(h) + net.advantage(h) - net.advantage(h).mean(-1, keepdim=True)
    torch.testing.assert_close(net(x), expected)


def test_huber_is_quadratic_inside_delta_and_linear_outside():
    td = torch.tensor([0.5, -3.0])
    assert td_loss(td, "huber", 1.0).tolist() == pytest.approx([0.125, 2.5])
    assert td_loss(td, "mse", 1.0).tolist() == pytest.approx([0.125, 4.5])


def test_summed_member_losses_give_each_member_exactly_its_own_autograd_gradient():
    seeds = [0, 1, 2]
    net = batch_members(lambda: make_q_network((3,), 1, 2, [8], False), seeds)
    x = torch.randn(3, 5, 3)
    values = net(x).pow(2).mean((1, 2))  # one loss per member
    values.sum().backward()
    for k in range(3):
        single = make_q_network((3,), 1, 2, [8], False)
        single.load_state_dict(member_state(net, k))
        lk = single(x[k]).pow(2).mean()
        lk.backward()
        assert values[k].item() == pytest.approx(lk.item(), rel=1e-6)
        grads = member_grads(net, k)  # in the single network's layout
        for n, p in single.named_parameters():
            torch.testing.assert_close(grads[n], p.grad)


@pytest.mark.parametrize("rows", [64, 1])
@pytest.mark.parametrize("out_features", [1, 2, 6, 16])
def test_a_member_batched_linear_layer_gives_member_k_the_bits_of_a_single_member_layer(out_features, rows, one_thread):
    """Member k's output may not depend on how many members share the layer, to the last bit (a one-column
    product once did: a matrix-vector kernel rounds differently for one member than for several; so did a
    6-column product of one row, an action chosen by a MinAtar Q-head or a DDPG actor, before narrow layers).

    On one thread, as the benchmarks and the workflow's CPU jobs run: with several, MKL may split one member's
    product over threads and eight members' over members, and neither weight layout is bitwise the same then
    (measured on 2 threads: 70 of 448 shapes for the [M, in, out] layout alone, 89 with narrow layers), so
    multi-threaded runs equal single-seed runs to float tolerance, as the member-k run tests check."""
    layers = [torch.nn.Linear(84, out_features) for _ in range(8)]
    x = torch.randn(8, rows, 84)
    many, one = MemberLinear(layers), MemberLinear(layers[3:4])
    assert torch.equal(many(x)[3], one(x[3:4])[0])
    assert torch.equal(many(x.unsqueeze(2))[3], one(x[3:4].unsqueeze(2))[0])  # extra batch dimensions
    # nor may its gradients (a one-column layer is a product and a sum, with a backward pass of its own)
    x_many, x_one = x.clone().requires_grad_(), x[3:4].clone().requires_grad_()
    many(x_many).pow(2).sum().backward()
    one(x_one).pow(2).sum().backward()
    assert torch.equal(many.weight.grad[3], one.weight.grad[0]) and torch.equal(many.bias.grad[3], one.bias.grad[0])
    assert torch.equal(x_many.grad[3], x_one.grad[0])


def test_a_fused_mlp_gives_each_member_the_outputs_and_gradients_of_its_own_sequential_and_leaves_its_input():
    """MemberSequential runs activations after linear layers in place: the numbers may not change, nor the input
    (an activation before any linear layer must not run in place), with autograd on or off."""
    def make():
        return torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3),
                                   torch.nn.Tanh())
    fused = batch_members(make, [0, 1, 2])
    assert type(fused).__name__ == "MemberSequential"
    x = torch.randn(3, 4, 5)
    x_before = x.clone()
    y = fused(x)
    assert torch.equal(x, x_before)
    y.pow(2).sum().backward()
    with torch.no_grad():
        assert torch.equal(fused(x), y.detach())
    for k in range(3):
        single = make()
        single.load_state_dict(member_state(fused, k))
        yk = single(x[k])
        torch.testing.assert_close(y[k], yk, rtol=1e-6, atol=1e-7)
        yk.pow(2).sum().backward()
        grads = member_grads(fused, k)
        for n, p in single.named_parameters():
            torch.testing.assert_close(grads[n], p.grad)


def test_grad_clipping_and_polyak_act_per_member():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    norms = clip_member_grad_norm([w], 1.0)
    assert norms.tolist() == pytest.approx([5.0, 0.5])
    assert w.grad[0].tolist() == pytest.approx([0.6, 0.8], rel=1e-5)
    assert w.grad[1].tolist() == pytest.approx([0.3, 0.4])
    target, online = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    for t, o in ((target, 0.0), (online, 1.0)):
        torch.nn.init.constant_(t.weight, o)
        torch.nn.init.constant_(t.bias, o)
    polyak_update(target, online, 0.25)
    assert target.weight.tolist() == [[0.25, 0.25], [0.25, 0.25]]
    params = torch.nn.Parameter(torch.zeros(2, 2))
    opt = torch.optim.SGD([params], lr=1.0)
    params.grad = torch.tensor([[1.0, 1.0], [2.0, 2.0]])  # one member per row: element-wise steps
    opt.step()
    assert params.tolist() == [[-1.0, -1.0], [-2.0, -2.0]]


def _train(algo, seeds, steps, sets, device="cpu"):
    cfg = build(algo, "CartPole-v1", seeds, steps, sets, device)
    runner = Runner(cfg, torch.device(device))
    *_, (_, state) = runner.train(None)
    return runner, state


@pytest.mark.parametrize("algo", ["double_dqn", "per_dqn"])
def test_member_k_of_a_multi_seed_run_follows_the_single_seed_run(algo, device):
    sets = ["learning_starts=100", "batch_size=32", "target_period=100", "eval_period=400", "eval_episodes=2",
            "log_period=200"]
    multi, ms = _train(algo, [0, 1, 2], 400, sets, device)  # 300 updates per member
    single, ss = _train(algo, [1], 400, sets, device)
    single_params = dict(single.agent.head.named_parameters())
    for name, p in multi.agent.head.named_parameters():
        torch.testing.assert_close(p[1], single_params[name][0], rtol=1e-5, atol=1e-6)

    def rows(state, seed):
        return [r[5:] for r in state["rows"] if r[5] == seed and r[9] != "steps_per_second"]

    got, want = rows(ms, 1), rows(ss, 1)
    assert [r[:-1] for r in got] == [r[:-1] for r in want]
    np.testing.assert_allclose([r[-1] for r in got], [r[-1] for r in want], rtol=1e-5)


def test_same_seed_gives_the_same_parameter_hash_and_another_seed_does_not():
    sets = ["learning_starts=50", "batch_size=16", "eval_period=300", "eval_episodes=1"]
    a, _ = _train("combined_dqn", [4], 300, sets)
    b, _ = _train("combined_dqn", [4], 300, sets)
    c, _ = _train("combined_dqn", [5], 300, sets)
    assert params_hash(a.agent.head) == params_hash(b.agent.head)
    assert params_hash(a.agent.head) != params_hash(c.agent.head)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dqn", "double_dqn"])
def test_dqn_learns_cartpole_to_195_within_25k_steps_on_2_of_5_seeds(algo):
    """CartPole-v1 counts as learned at an evaluation return of 195 (the v0 'solved' level); greedy policy.

    Measured with the CartPole preset: Double DQN reached 195 within 15k steps on 4 of seeds 0-8 (the commit
    before engine v2: 6 of 9, same code path in distribution), within 25k on 7 of seeds 0-9; at 2 of 3 seeds in
    15k the test passed or failed by seed luck (about 0.4-0.8). At 2 of 5 within 25k a per-seed rate of 0.7
    passes with probability 0.97. Training stops at the first evaluation by which 2 seeds have learned."""
    cfg = build(algo, "CartPole-v1", [0, 1, 2, 3, 4], 25_000,
                ["eval_period=2500", "eval_episodes=5", "log_period=5000", "threads=1"])
    runner = Runner(cfg, torch.device("cpu"))
    best, seen = {}, 0
    for _, state in runner.train(None):
        for r in state["rows"][seen:]:  # rows accumulate: read each once
            if r[9] == "eval_return":
                best[r[5]] = max(best.get(r[5], -np.inf), r[10])
        seen = len(state["rows"])
        if sum(v >= 195 for v in best.values()) >= 2:
            break
    runner.env.close()
    assert sum(v >= 195 for v in best.values()) >= 2, best


def test_per_member_and_grouped_convolutions_give_the_same_outputs_and_grads():
    net = batch_members(lambda: make_q_network((84, 84), 4, 3, [], False), [0, 1, 2], grouped_conv=False)
    x = torch.randint(0, 255, (3, 2, 4, 84, 84), dtype=torch.uint8)
    looped = net(x)
    looped.pow(2).mean((1, 2)).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    for m in net.modules():
        if isinstance(m, MemberConv2d):
            m.grouped = True
    grouped = net(x)
    grouped.pow(2).mean((1, 2)).sum().backward()
    torch.testing.assert_close(looped, grouped)
    for n, p in net.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-4, atol=1e-6)
    single = make_q_network((84, 84), 4, 3, [], False)
    single.load_state_dict(member_state(net, 2))
    torch.testing.assert_close(single(x[2]), looped[2], rtol=1e-5, atol=1e-6)
