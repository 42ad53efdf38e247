"""Fitted dynamics: time-varying linear-Gaussian models with a global prior, and the neural-network model."""

import torch

from algorithms.dynamics import LinearGaussianDynamics, NNDynamics, fit_linear_gaussian_dynamics

DX, DU = 3, 2


def _system(horizon: int, drift: float, g: torch.Generator) -> LinearGaussianDynamics:
    """A known time-varying linear-Gaussian system whose per-step matrices drift around a common one."""
    a0 = 0.3 * torch.randn(DX, DX, generator=g) + 0.8 * torch.eye(DX)
    b0 = 0.5 * torch.randn(DX, DU, generator=g)
    a = a0 + drift * torch.randn(horizon, DX, DX, generator=g)
    b = b0 + drift * torch.randn(horizon, DX, DU, generator=g)
    root = 0.2 * torch.randn(horizon, DX, DX, generator=g)
    sigma = root @ root.transpose(1, 2) + 0.01 * torch.eye(DX)
    f = 0.1 * torch.randn(horizon, DX, generator=g)
    return LinearGaussianDynamics(F=torch.cat([a, b], -1).double(), f=f.double(), Sigma=sigma.double())


def _rollouts(system: LinearGaussianDynamics, episodes: int, g: torch.Generator):
    horizon = system.horizon
    X = torch.zeros(episodes, horizon + 1, DX, dtype=torch.float64)
    U = torch.randn(episodes, horizon, DU, generator=g, dtype=torch.float64)
    X[:, 0] = torch.randn(episodes, DX, generator=g, dtype=torch.float64)
    for t in range(horizon):
        X[:, t + 1] = system.sample(t, X[:, t], U[:, t], g)
    return X, U


def test_fit_recovers_the_dynamics_and_noise_of_a_known_time_varying_system():
    g = torch.Generator().manual_seed(0)
    system = _system(horizon=4, drift=0.1, g=g)
    X, U = _rollouts(system, episodes=3000, g=g)
    model = fit_linear_gaussian_dynamics(X, U, n_fit=3000, n_prior=3000)
    assert float((model.F - system.F).abs().max()) < 0.03
    assert float((model.f - system.f).abs().max()) < 0.03
    rel = (model.Sigma - system.Sigma).norm(dim=(1, 2)) / system.Sigma.norm(dim=(1, 2))
    assert float(rel.max()) < 0.1


def test_prior_beats_unregularized_regression_with_fewer_samples_than_dimensions():
    # n_fit = 4 < dx + du + 1 = 6 samples per step: least squares alone is underdetermined.
    ratios = []
    for seed in range(10):
        g = torch.Generator().manual_seed(100 + seed)
        system = _system(horizon=10, drift=0.05, g=g)
        X, U = _rollouts(system, episodes=20, g=g)
        with_prior = fit_linear_gaussian_dynamics(X, U, n_fit=4)
        without = fit_linear_gaussian_dynamics(X, U, n_fit=4, prior_strength=0)
        err_prior = float((with_prior.F - system.F).norm(dim=(1, 2)).mean())
        err_plain = float((without.F - system.F).norm(dim=(1, 2)).mean())
        ratios.append(err_prior / err_plain)
    assert max(ratios) < 1.0
    assert sum(ratios) / len(ratios) < 0.6


def test_predict_is_the_affine_mean_and_sample_has_the_fitted_covariance():
    g = torch.Generator().manual_seed(1)
    system = _system(horizon=3, drift=0.1, g=g)
    x = torch.randn(20000, DX, generator=g, dtype=torch.float64)
    u = torch.randn(20000, DU, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (20000,), generator=g)
    expected = torch.einsum("bij,bj->bi", system.F[t], torch.cat([x, u], -1)) + system.f[t]
    assert torch.allclose(system.predict(t, x, u), expected)
    x1, u1 = x[:1].expand(20000, DX), u[:1].expand(20000, DU)
    residual = system.sample(2, x1, u1, g) - system.predict(2, x1, u1)
    assert torch.allclose(residual.T.cov(), system.Sigma[2], atol=0.03 * float(system.Sigma[2].abs().max()))


def test_nn_model_learns_a_nonlinear_system():
    g = torch.Generator().manual_seed(2)
    a = 0.9 * torch.eye(DX) + 0.1 * torch.randn(DX, DX, generator=g)
    b = 0.5 * torch.randn(DX, DU, generator=g)

    def rollouts(episodes):
        X = torch.zeros(episodes, 51, DX)
        U = torch.randn(episodes, 50, DU, generator=g)
        X[:, 0] = torch.randn(episodes, DX, generator=g)
        for t in range(50):
            X[:, t + 1] = torch.tanh(X[:, t] @ a.T + U[:, t] @ b.T)
        return X, U

    X, U = rollouts(40)
    X_test, U_test = rollouts(20)
    torch.manual_seed(0)
    model = NNDynamics(DX, DU, hidden=(64, 64))
    losses = model.fit(X, U, epochs=10, generator=torch.Generator().manual_seed(3))
    assert losses[-1] < 0.1 * losses[0]
    with torch.no_grad():
        pred = model.predict(0, X_test[:, :-1], U_test)
    # Error relative to the variance of the step x_{t+1} - x_t on held-out episodes.
    nmse = (pred - X_test[:, 1:]).pow(2).mean() / (X_test[:, 1:] - X_test[:, :-1]).pow(2).mean()
    assert float(nmse) < 0.05
