"""A floor for qrepro's CartPole DQN at M members: the same arithmetic in one lean loop, without the engine.

Usage: OMP_NUM_THREADS=1 python experiments/scripts/floor_dqn_cartpole.py [MEMBERS] [STEPS]

The loop is CleanRL's dqn.py written for M members on qrepro's member-batched products: M CartPole-v1
environments, epsilon-greedy from one numpy generator, a replay of separate observation and next-observation
arrays, one minibatch of 64 per member and step, the 4-120-84-2 network of ``bench_vs_anchor.sh`` as three
``baddbmm`` calls, the Huber loss, torch's fused Adam kernel called directly, a hard target copy every 500
steps. It keeps none of what a qrepro run keeps: per-member random streams (member k of this loop is not a
single-seed run), metrics, divergence checks, the replay's episode bookkeeping (time-limit bootstrapping,
rejection of episode-final rows), evaluation, checkpoints. So it is not a learner to use, only the speed that
the same products and optimizer reach with the least Python around them on this core (docs/performance.md,
"What a step at 8 members costs"). Prints aggregate agent steps/s over the steps after the first 1,000.
"""

from __future__ import annotations

import sys
import time

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from experiments.allocator import keep_freed_memory  # noqa: E402 - qrepro's benches keep freed memory too


def main(members: int = 8, steps: int = 11_000, warmup: int = 1_000) -> float:
    torch.set_num_threads(1)
    keep_freed_memory()
    M, N, B, gamma = members, 50_000, 64, 0.99
    envs = [gym.make("CartPole-v1") for _ in range(M)]
    obs = np.stack([e.reset(seed=k)[0] for k, e in enumerate(envs)])

    def layer(i: int, o: int):
        return (torch.randn(M, i, o) * i ** -0.5).requires_grad_(), torch.zeros(M, 1, o, requires_grad=True)

    params = [*layer(4, 120), *layer(120, 84), *layer(84, 2)]
    target = [p.detach().clone() for p in params]

    def q_net(x, p):
        h = torch.relu_(torch.baddbmm(p[1], x, p[0]))
        h = torch.relu_(torch.baddbmm(p[3], h, p[2]))
        return torch.baddbmm(p[5], h, p[4])

    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    count = [torch.zeros(()) for _ in params]
    S, S2 = np.zeros((M, N, 4), np.float32), np.zeros((M, N, 4), np.float32)
    A, R, D = np.zeros((M, N), np.int64), np.zeros((M, N), np.float32), np.zeros((M, N), np.float32)
    rng = np.random.default_rng(0)
    rows = np.arange(M)[:, None]
    t0 = None
    for step in range(steps):
        if step == warmup:
            t0 = time.perf_counter()
        eps = max(0.05, 1 - step / 2_000)
        u = rng.random((M, 2))
        with torch.no_grad():
            greedy = q_net(torch.from_numpy(obs).unsqueeze(1), params).argmax(-1).numpy()[:, 0]
        action = np.where(u[:, 0] < eps, (u[:, 1] * 2).astype(np.int64), greedy)
        next_obs, final, reward, term = [], [], [], []
        for k, env in enumerate(envs):
            o, r, te, tr, _ = env.step(action[k])
            final.append(o)
            if te or tr:
                o, _ = env.reset()
            next_obs.append(o)
            reward.append(r)
            term.append(te)
        pos = step % N
        S[:, pos], S2[:, pos], A[:, pos], R[:, pos], D[:, pos] = obs, np.stack(final), action, reward, term
        obs = np.stack(next_obs)
        if step < 100:
            continue
        idx = rng.integers(0, min(step + 1, N), (M, B))
        s, s2 = torch.from_numpy(S[rows, idx]), torch.from_numpy(S2[rows, idx])
        a, r, d = torch.from_numpy(A[rows, idx]), torch.from_numpy(R[rows, idx]), torch.from_numpy(D[rows, idx])
        with torch.no_grad():
            y = r + gamma * q_net(s2, target).max(-1).values * (1 - d)
        q = q_net(s, params).gather(-1, a.unsqueeze(-1)).squeeze(-1)
        for p in params:
            p.grad = None
        F.huber_loss(q, y, reduction="none").mean(1).sum().backward()
        with torch.no_grad():
            torch._foreach_add_(count, 1)
            torch._fused_adam_(params, [p.grad for p in params], m, v, [], count, lr=1e-3, beta1=0.9,
                               beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
            if step % 500 == 0:
                torch._foreach_copy_(target, params)
    return (steps - warmup) * M / (time.perf_counter() - t0)


if __name__ == "__main__":
    members = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 11_000
    print(f"floor dqn CartPole-v1 M={members}: {main(members, n):.0f} aggregate agent steps/s")
