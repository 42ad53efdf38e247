"""The least time a DDPG step of M members can take on this core: its multiply-adds at the core's matrix rate.

Counts the multiply-adds of one agent step of DDPG (critic update every step, actor update every
``policy_period`` steps, one acting forward pass) from the network shapes of the anchor's settings
(../shared/anchors/bench-cleanrl.sh: HalfCheetah-v5's 17 observations and 6 actions, 256-256 networks, batch 64,
the action fed to the critic's first layer, CleanRL's actor period 2), measures this core's single-precision
matrix-product rate with one thread, and prints the shortest step those products allow and the largest ratio
to the anchor it permits; then adds the element-wise passes over the weights that an exact step cannot skip
either (Adam, the target networks' averaging, run by qrepro's DDPG agent), timed warm, and then the members'
environment steps through gymnasium. The rest of the step's element-wise work (activations, their gradients,
bias sums), the replay and Python come on top, so a measured step is always longer.

    OMP_NUM_THREADS=1 python experiments/scripts/bound_ddpg.py --anchor-sps 404 [--members 8] [--policy-period 2]

The products counted are those an exact implementation cannot skip (qrepro's and CleanRL's alike):
- critic update: forward passes of the target actor and the target critic on s', of the critic on (s, a);
  backward pass of the critic: every weight gradient, the input gradient of every layer but the first;
- actor update: forward passes of the actor and the critic on s; backward pass of the critic to its action
  input (input gradients of every layer but the first, and of the first layer's action columns only:
  autograd computes them for the whole concatenated input, which this count leaves out), of the actor
  (every weight gradient, the input gradient of every layer but the first); the critic's weight gradients
  are not needed and not counted;
- acting: one actor forward pass of one observation.
"""

from __future__ import annotations

import argparse
import time

import torch

# the anchor's settings (../shared/anchors/bench-cleanrl.sh): HalfCheetah-v5's observations and actions
OBS, ACT, HIDDEN, BATCH = 17, 6, [256, 256], 64


def layer_dims(n_in: int, hidden: list[int], n_out: int) -> list[tuple[int, int]]:
    dims = [n_in, *hidden, n_out]
    return list(zip(dims[:-1], dims[1:], strict=True))


def macs_per_step(obs: int, act: int, hidden: list[int], batch: int, policy_period: int) -> dict[str, float]:
    """Multiply-adds of one member's agent step, by part (module docstring)."""
    actor = layer_dims(obs, hidden, act)
    critic = layer_dims(obs + act, hidden, 1)

    def products(layers):  # one pass of a batch row: forward, weight gradients or input gradients alike
        return sum(i * o for i, o in layers)

    critic_update = batch * (products(actor) + products(critic)  # target actor and target critic on s'
                             + products(critic)                    # critic on (s, a)
                             + products(critic)                    # its weight gradients
                             + products(critic[1:]))               # its input gradients but the first layer's
    actor_update = batch * (products(actor) + products(critic)    # actor, then critic, on s
                            + products(critic[1:]) + act * hidden[0]  # critic's input gradients, to the action
                            + products(actor)                      # actor's weight gradients
                            + products(actor[1:]))                 # its input gradients but the first layer's
    return {"critic update": critic_update, "actor update": actor_update / policy_period, "acting": products(actor)}


def seconds_per_call(fn, seconds: float = 1.0) -> float:
    """Mean wall time of ``fn()`` over about ``seconds`` of calls, after a few warm-up calls."""
    for _ in range(3):
        fn()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def gemm_rate(shape: tuple[int, int, int, int]) -> float:
    """Single-precision FLOP/s of torch.bmm over [M, B, K] x [M, K, N] (operands warm in cache)."""
    m, b, k, n = shape
    x, w = torch.randn(m, b, k), torch.randn(m, k, n)
    out = torch.empty(m, b, n)
    return 2 * m * b * k * n / seconds_per_call(lambda: torch.bmm(x, w, out=out))


def elementwise_seconds(members: int, policy_period: int) -> float:
    """Seconds per agent step of the element-wise passes over the weights that an exact step cannot skip,
    run by qrepro's own DDPG agent (anchor settings): Adam over the critic every step and over the actor
    every ``policy_period`` steps, and the target networks' averaging every ``policy_period`` steps. Timed
    warm, with made-up gradients, so a lower bound of what they cost inside a step."""
    import gymnasium as gym
    import numpy as np

    from algorithms.ddpg import DDPGAgent, DDPGConfig

    cfg = DDPGConfig(hidden=list(HIDDEN), critic_action_layer=0, policy_period=policy_period, batch_size=BATCH)
    agent = DDPGAgent(cfg, (OBS,), 1, gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32), list(range(members)), 1)
    for p in agent.q_params + agent.policy_params:
        p.grad = torch.randn_like(p) * 1e-3

    def one_period():
        for _ in range(policy_period):
            agent.opt.fast_step()
        agent.policy_opt.fast_step()
        agent.polyak(cfg.polyak_tau)

    return seconds_per_call(one_period) / policy_period


def environment_seconds(members: int) -> float:
    """Seconds per agent step of the members' HalfCheetah-v5 steps through gymnasium (which the anchor steps
    too), with none of qrepro's bookkeeping: a part of every step that no implementation of the task skips."""
    import gymnasium as gym
    import numpy as np

    from envs.mujoco_tasks import quiet_settotalmass_warning

    quiet_settotalmass_warning()
    envs = [gym.make("HalfCheetah-v5") for _ in range(members)]
    for k, env in enumerate(envs):
        env.reset(seed=k)
    action = np.zeros(ACT, np.float32)

    def step():
        for env in envs:
            *_, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return seconds_per_call(step)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anchor-sps", type=float, required=True,
                   help="CleanRL's DDPG steps/s measured in this session (bench-cleanrl.sh ddpg)")
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--policy-period", type=int, default=2)
    p.add_argument("--ratio", type=float, default=4.0, help="the target ratio of the aggregate to the anchor")
    a = p.parse_args()
    if a.anchor_sps <= 0 or a.members <= 0 or a.policy_period <= 0 or a.ratio <= 0:
        p.error("--anchor-sps, --members, --policy-period and --ratio must be > 0")
    torch.set_num_threads(1)
    parts = macs_per_step(OBS, ACT, HIDDEN, BATCH, a.policy_period)
    flops = 2 * sum(parts.values()) * a.members
    rates = {f"[{a.members},{BATCH},256] x [{a.members},256,256] (the step's widest)":
             gemm_rate((a.members, BATCH, 256, 256)),
             "[1024,1024] x [1024,1024]": gemm_rate((1, 1024, 1024, 1024))}
    best = max(rates.values())
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread")
    for name, macs in parts.items():
        print(f"multiply-adds per member-step, {name:<14} {macs / 1e6:8.2f} M")
    print(f"FLOP per agent step of {a.members} members          {flops / 1e6:8.1f} M")
    for name, r in rates.items():
        print(f"matrix rate, {name:<42} {r / 1e9:6.1f} GFLOP/s")
    step_min = flops / best
    need = a.members / (a.ratio * a.anchor_sps)
    print(f"shortest step the products allow at {best / 1e9:.1f} GFLOP/s: {step_min * 1e3:.2f} ms "
          f"-> at most {a.members / step_min:.0f} aggregate steps/s, {a.members / step_min / a.anchor_sps:.2f}x "
          f"the anchor's {a.anchor_sps:g}")
    print(f"{a.ratio:g}x the anchor needs a step of {a.members} members in {need * 1e3:.2f} ms: "
          f"{flops / need / 1e9:.1f} GFLOP/s of products alone")
    other = elementwise_seconds(a.members, a.policy_period)
    print(f"Adam and the target averaging, per step (warm): {other * 1e3:.2f} ms -> with the products at least "
          f"{(step_min + other) * 1e3:.2f} ms, at most {a.members / (step_min + other) / a.anchor_sps:.2f}x the anchor")
    envs = environment_seconds(a.members)
    step_all = step_min + other + envs
    print(f"{a.members} environment steps (gymnasium, nothing else): {envs * 1e3:.2f} ms -> with both above at least "
          f"{step_all * 1e3:.2f} ms, at most {a.members / step_all / a.anchor_sps:.2f}x the anchor")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
