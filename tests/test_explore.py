"""Exploration: action noise on the member axis, LQR against Riccati, iLQG on a linear-quadratic problem."""

import numpy as np
import pytest
import scipy.linalg
import torch

from algorithms.dynamics import LinearGaussianDynamics
from algorithms.explore import (
    GaussianNoise,
    OrnsteinUhlenbeckNoise,
    QuadraticReward,
    fit_quadratic_reward,
    ilqg_step,
    lqr_backward,
)
from algorithms.members import torch_generators

DX, DU = 3, 2

# ---------------------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------------------


def test_ou_noise_has_the_stationary_variance_of_its_discretization():
    # dt = 1: AR(1) with a = 1 - theta, so Var = sigma^2 / (theta (2 - theta)) = 0.1441 at the defaults
    # (the continuous-time sigma^2 / (2 theta) = 0.1333 is its dt -> 0 limit).
    noise = OrnsteinUhlenbeckNoise(torch_generators(range(4), "ou"), action_dim=16)
    assert noise.stationary_variance() == pytest.approx(0.2**2 / (0.15 * 1.85))
    small_dt = OrnsteinUhlenbeckNoise(torch_generators([0], "ou"), action_dim=1, dt=1e-3)
    assert small_dt.stationary_variance() == pytest.approx(0.2**2 / (2 * 0.15), rel=1e-3)
    for _ in range(100):  # burn-in: 0.85^100 < 1e-7 of the start remains
        noise.sample()
    draws = torch.stack([noise.sample() for _ in range(3000)])
    assert float(draws.var()) == pytest.approx(noise.stationary_variance(), rel=0.05)
    assert abs(float(draws.mean())) < 0.03


@pytest.mark.parametrize("kind", [OrnsteinUhlenbeckNoise, GaussianNoise])
def test_member_noise_equals_a_single_member_run_with_the_same_seed(kind):
    seeds = [0, 1, 2]
    resets = {10: [False, True, False], 25: [True, False, True]}
    batch = kind(torch_generators(seeds, "explore"), action_dim=DU)
    batch_draws = []
    for step in range(40):
        batch_draws.append(batch.sample())
        if step in resets:
            batch.reset(torch.tensor(resets[step]))
    batch_draws = torch.stack(batch_draws)
    for k, seed in enumerate(seeds):
        single = kind(torch_generators([seed], "explore"), action_dim=DU)
        draws = []
        for step in range(40):
            draws.append(single.sample())
            if step in resets and resets[step][k]:
                single.reset()
        assert torch.equal(torch.stack(draws)[:, 0], batch_draws[:, k])


def test_ou_reset_restarts_only_the_members_whose_episode_ended():
    noise = OrnsteinUhlenbeckNoise(torch_generators([0, 1], "ou"), action_dim=DU)
    for _ in range(5):
        noise.sample()
    before = noise.state.clone()
    noise.reset(torch.tensor([True, False]))
    assert torch.equal(noise.state[0], torch.zeros(DU))
    assert torch.equal(noise.state[1], before[1])


def test_gaussian_noise_has_the_requested_standard_deviation():
    noise = GaussianNoise(torch_generators(range(4), "gauss"), action_dim=8, sigma=0.3)
    draws = torch.stack([noise.sample() for _ in range(500)])
    assert float(draws.std()) == pytest.approx(0.3, rel=0.05)


# ---------------------------------------------------------------------------------------------------------
# LQR and iLQG
# ---------------------------------------------------------------------------------------------------------


def _random_spd(n: int, g: torch.Generator, floor: float) -> torch.Tensor:
    root = torch.randn(n, n, generator=g, dtype=torch.float64)
    return root @ root.T / n + floor * torch.eye(n, dtype=torch.float64)


def test_lqr_long_horizon_gains_match_the_discrete_algebraic_riccati_solution():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(DX, DX, generator=g, dtype=torch.float64) * 0.6
    b = torch.randn(DX, DU, generator=g, dtype=torch.float64)
    q, r = _random_spd(DX, g, 0.1), _random_spd(DU, g, 0.1)
    C = torch.block_diag(q, r)  # cost 1/2 (x^T Q x + u^T R u): value 1/2 x^T P x with the same P
    sol = lqr_backward(torch.cat([a, b], 1), torch.zeros(DX, dtype=torch.float64), C,
                       torch.zeros(DX + DU, dtype=torch.float64), T=300)
    p = scipy.linalg.solve_discrete_are(a.numpy(), b.numpy(), q.numpy(), r.numpy())
    bt_p = b.numpy().T @ p
    k_inf = -np.linalg.solve(r.numpy() + bt_p @ b.numpy(), bt_p @ a.numpy())
    np.testing.assert_allclose(sol.K[0].numpy(), k_inf, atol=1e-8)
    np.testing.assert_allclose(sol.V[0].numpy(), p, atol=1e-8)
    assert torch.allclose(sol.k[0], torch.zeros(DU, dtype=torch.float64))


def _riccati_by_hand(A, B, f, H, h):
    """Finite-horizon LQR for reward r = -1/2 z^T H z + h^T z, affine dynamics folded into y = [x; 1]."""
    T, dx, du = A.shape[0], A.shape[1], B.shape[2]
    P = np.zeros((dx + 1, dx + 1))
    gains, quus = [None] * T, [None] * T
    for t in reversed(range(T)):
        At = np.block([[A[t], f[t][:, None]], [np.zeros((1, dx)), np.ones((1, 1))]])
        Bt = np.vstack([B[t], np.zeros((1, du))])
        M = np.zeros((dx + 1 + du, dx + 1 + du))  # cost -r over w = [x; 1; u]
        xs, us, one = slice(0, dx), slice(dx + 1, dx + 1 + du), dx
        M[xs, xs], M[xs, us], M[us, xs], M[us, us] = H[:dx, :dx], H[:dx, dx:], H[dx:, :dx], H[dx:, dx:]
        M[xs, one] = M[one, xs] = -h[:dx]
        M[us, one] = M[one, us] = -h[dx:]
        Qyy = M[:dx + 1, :dx + 1] + At.T @ P @ At
        Quy = M[us, :dx + 1] + Bt.T @ P @ At
        Quu = M[us, us] + Bt.T @ P @ Bt
        gains[t] = -np.linalg.solve(Quu, Quy)
        quus[t] = Quu
        P = Qyy + Quy.T @ gains[t]
    gains = np.stack(gains)
    return gains[:, :, :dx], gains[:, :, dx], np.stack(quus)


def _linear_quadratic_problem(T: int, g: torch.Generator):
    A = 0.9 * torch.eye(DX, dtype=torch.float64) + 0.2 * torch.randn(T, DX, DX, generator=g,
                                                                      dtype=torch.float64)
    B = torch.randn(T, DX, DU, generator=g, dtype=torch.float64)
    f = 0.1 * torch.randn(T, DX, generator=g, dtype=torch.float64)
    H = _random_spd(DX + DU, g, 0.2)
    h = torch.randn(DX + DU, generator=g, dtype=torch.float64)
    dynamics = LinearGaussianDynamics(F=torch.cat([A, B], -1), f=f,
                                      Sigma=0.01 * torch.eye(DX, dtype=torch.float64).expand(T, DX, DX))
    return A, B, f, H, h, dynamics


def test_ilqg_on_a_linear_system_with_quadratic_reward_gives_the_riccati_controller_from_any_nominal():
    g = torch.Generator().manual_seed(1)
    T = 20
    A, B, f, H, h, dynamics = _linear_quadratic_problem(T, g)
    reward = QuadraticReward(C=-H, c=h, c0=torch.tensor(0.0, dtype=torch.float64))
    K_hand, k_hand, quu_hand = _riccati_by_hand(A.numpy(), B.numpy(), f.numpy(), H.numpy(), h.numpy())
    x0 = torch.randn(DX, generator=g, dtype=torch.float64)
    controllers = []
    for _ in range(2):  # two unrelated nominal trajectories, not even consistent with the dynamics
        X_nom = torch.randn(T + 1, DX, generator=g, dtype=torch.float64)
        U_nom = torch.randn(T, DU, generator=g, dtype=torch.float64)
        controllers.append(ilqg_step(dynamics, reward, x0, X_nom, U_nom))
    for ctrl in controllers:
        assert ctrl.reg == 0.0
        np.testing.assert_allclose(ctrl.K.numpy(), K_hand, atol=1e-9)
        np.testing.assert_allclose(ctrl.k.numpy(), k_hand, atol=1e-9)
        np.testing.assert_allclose(ctrl.covariance.numpy(), np.linalg.inv(quu_hand), atol=1e-9)
        # The new nominal is the controller's mean trajectory under the model's mean dynamics.
        assert torch.equal(ctrl.X_nominal[0], x0)
        for t in range(T):
            assert torch.allclose(ctrl.U_nominal[t], ctrl.mean(t, ctrl.X_nominal[t]))
            predicted = dynamics.predict(t, ctrl.X_nominal[t], ctrl.U_nominal[t])
            assert torch.allclose(ctrl.X_nominal[t + 1], predicted)


def test_ilqg_regularizes_a_reward_model_that_is_convex_in_the_action():
    g = torch.Generator().manual_seed(2)
    T = 5
    *_, H, h, dynamics = _linear_quadratic_problem(T, g)
    H[DX:, DX:] = -H[DX:, DX:]  # the reward now grows without bound in u: Q_uu of the cost is indefinite
    reward = QuadraticReward(C=-H, c=h, c0=torch.tensor(0.0, dtype=torch.float64))
    ctrl = ilqg_step(dynamics, reward, torch.zeros(DX, dtype=torch.float64),
                     torch.zeros(T + 1, DX, dtype=torch.float64), torch.zeros(T, DU, dtype=torch.float64))
    assert ctrl.reg > 0
    assert bool((torch.linalg.eigvalsh(ctrl.covariance) > 0).all())
    assert bool(torch.isfinite(ctrl.K).all() and torch.isfinite(ctrl.k).all())
    u = ctrl.sample(0, torch.zeros(DX, dtype=torch.float64), torch.Generator().manual_seed(3), cov_scale=0.5)
    assert u.shape == (DU,)


def test_fit_quadratic_reward_recovers_a_known_quadratic():
    g = torch.Generator().manual_seed(4)
    truth = QuadraticReward(C=-_random_spd(DX + DU, g, 0.1),
                            c=torch.randn(DX + DU, generator=g, dtype=torch.float64),
                            c0=torch.tensor(0.7, dtype=torch.float64))
    X = torch.randn(400, DX, generator=g, dtype=torch.float64)
    U = torch.randn(400, DU, generator=g, dtype=torch.float64)
    fit = fit_quadratic_reward(X, U, truth(X, U))
    assert torch.allclose(fit.C, truth.C, atol=1e-5)
    assert torch.allclose(fit.c, truth.c, atol=1e-5)
    assert float(fit.c0) == pytest.approx(0.7, abs=1e-5)
    noise = 0.05 * torch.randn(400, generator=g, dtype=torch.float64)
    noisy = fit_quadratic_reward(X, U, truth(X, U) + noise)
    assert float((noisy.C - truth.C).abs().max()) < 0.05
