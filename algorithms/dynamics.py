"""Learned dynamics models for imagination rollouts and iLQG exploration (Gu et al. 2016, Sec. 5).

Two models with one interface, ``predict(t, x, u) -> x_next``:

- ``LinearGaussianDynamics``: time-varying linear-Gaussian models x_{t+1} ~ N(F_t [x_t; u_t] + f_t, Sigma_t),
  fitted by ``fit_linear_gaussian_dynamics`` to the latest episodes. Gu et al. 2016 (Sec. 5, Algorithm 2)
  refit them every n = 5 episodes from those 5 episodes, following the guided-policy-search fit of Levine &
  Abbeel 2014 (NIPS), which regularizes each per-step regression with a normal-inverse-Wishart prior
  built from a GMM over all recent transitions. We use a single global Gaussian as the prior (a GMM with
  one cluster): the per-step fit is pulled towards one global linear model, which is what makes a
  regression from fewer samples than dimensions well posed.
- ``NNDynamics``: the neural-network model ablation of Gu et al. 2016 (Fig. 2), an MLP
  predicting x_{t+1} - x_t from (x_t, u_t); time-invariant, so ``t`` is ignored.

Everything here is for one member; a run with M members fits M models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------------------
# Time-varying linear-Gaussian models
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LinearGaussianDynamics:
    """x_{t+1} ~ N(F[t] [x; u] + f[t], Sigma[t]) for t = 0 .. T-1.

    F: [T, dx, dx + du]; f: [T, dx]; Sigma: [T, dx, dx].
    ``t`` may be an int or an integer tensor broadcasting with the batch dimensions of x (imagination
    rollouts start from stored transitions at different time steps).
    """

    F: torch.Tensor
    f: torch.Tensor
    Sigma: torch.Tensor

    @property
    def horizon(self) -> int:
        return self.F.shape[0]

    def predict(self, t: int | torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The mean next state F_t [x; u] + f_t, shape of x."""
        z = torch.cat([x, u], dim=-1)
        return (self.F[t] @ z.unsqueeze(-1)).squeeze(-1) + self.f[t]

    def sample(self, t: int | torch.Tensor, x: torch.Tensor, u: torch.Tensor,
               generator: torch.Generator) -> torch.Tensor:
        """A next state drawn from N(F_t [x; u] + f_t, Sigma_t)."""
        mean = self.predict(t, x, u)
        eps = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
        chol = torch.linalg.cholesky(self.Sigma[t])
        return mean + (chol @ eps.to(mean.device).unsqueeze(-1)).squeeze(-1)


@dataclass
class NIWPrior:
    """A normal-inverse-Wishart prior over the joint Gaussian of [x_t; u_t; x_{t+1}].

    In the parameterization of the guided-policy-search code (Finn et al., github.com/cbfinn/gps,
    gps/utility/gauss_fit_joint_prior): mean mu0 with weight m pseudo-observations, scatter Phi with
    n0 degrees of freedom.
    """

    mu0: torch.Tensor
    Phi: torch.Tensor
    m: float
    n0: float


def _joint_points(X: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """[x_t; u_t; x_{t+1}] for every trajectory and step: [N, T, 2 dx + du]."""
    return torch.cat([X[:, :-1], U, X[:, 1:]], dim=-1)


def fit_global_prior(X: torch.Tensor, U: torch.Tensor, strength: float = 1.0) -> NIWPrior:
    """A single Gaussian over all transitions of X [N, T+1, dx], U [N, T, du], pooled over time.

    Hyperparameters as the GPS GMM prior with one cluster (cbfinn/gps, gps/utility/gmm.py ``inference``
    and dynamics_prior_gmm.py ``eval``): m = strength, n0 = strength (P - 2 - D) / P for P pooled points
    of dimension D (floored at 0, ours, for tiny data sets), Phi = m * the pooled covariance.
    strength: 1.0, the GPS default (gps/algorithm/dynamics/config.py, DYN_PRIOR_GMM).
    """
    pts = _joint_points(X, U).reshape(-1, X.shape[-1] * 2 + U.shape[-1])
    count, dim = pts.shape
    mu0 = pts.mean(0)
    diff = pts - mu0
    cov = diff.T @ diff / count
    n0 = strength * max(count - 2 - dim, 0) / count
    return NIWPrior(mu0=mu0, Phi=strength * cov, m=strength, n0=n0)


def fit_linear_gaussian_dynamics(X: torch.Tensor, U: torch.Tensor, n_fit: int = 5, n_prior: int = 20,
                                 prior_strength: float = 1.0,
                                 regularization: float = 1e-6) -> LinearGaussianDynamics:
    """Fit x_{t+1} ~ N(F_t [x_t; u_t] + f_t, Sigma_t) for every t, by regression with a Gaussian prior.

    X: [N, T+1, dx] states and U: [N, T, du] actions of the latest N episodes, oldest first.
    n_fit: 5, the per-step regression uses the last 5 episodes (Gu et al. 2016, Algorithm 2, n = 5).
    n_prior: 20, the prior is fitted on the last 20 episodes pooled over time (the GPS prior's
        max_samples = 20 trajectories, cbfinn/gps DYN_PRIOR_GMM).
    prior_strength: 1.0 (GPS default, see fit_global_prior); 0 fits without a prior (plain least squares,
        minimum-norm where the samples do not span [x; u]).
    regularization: 1e-6, added to the [x; u] block of the joint covariance before conditioning (the GPS
        default, gps/algorithm/dynamics/config.py, DYN_LR_PRIOR).

    Per step t, the MAP joint covariance under the prior is (Levine & Abbeel 2014; GPS
    gauss_fit_joint_prior)
        Sigma = (N S + Phi + N m / (N + m) (mean - mu0)(mean - mu0)^T) / (N + n0)
    with the empirical mean and (biased) covariance S of the N joint points; conditioning the joint Gaussian
    on [x_t; u_t] gives F_t, f_t and Sigma_t. Computed in float64, returned in X's dtype.
    """
    if X.shape[0] != U.shape[0] or X.shape[1] != U.shape[1] + 1:
        raise ValueError(f"need X [N, T+1, dx] and U [N, T, du], got {tuple(X.shape)} and {tuple(U.shape)}")
    dtype = X.dtype
    X, U = X.double(), U.double()
    d_in = X.shape[-1] + U.shape[-1]
    pts = _joint_points(X[-n_fit:], U[-n_fit:]).transpose(0, 1)  # [T, N, D]
    count = pts.shape[1]
    mean = pts.mean(1)
    diff = pts - mean.unsqueeze(1)
    sigma = diff.transpose(1, 2) @ diff / count
    if prior_strength > 0:
        prior = fit_global_prior(X[-n_prior:], U[-n_prior:], prior_strength)
        dev = mean - prior.mu0
        shrink = count * prior.m / (count + prior.m)
        scatter = count * sigma + prior.Phi + shrink * dev.unsqueeze(-1) * dev.unsqueeze(-2)
        sigma = scatter / (count + prior.n0)
    sigma = 0.5 * (sigma + sigma.transpose(1, 2))
    eye = torch.eye(d_in, dtype=sigma.dtype, device=sigma.device)
    sigma_in = sigma[:, :d_in, :d_in] + regularization * eye
    sigma_cross = sigma[:, :d_in, d_in:]
    F = torch.linalg.solve(sigma_in, sigma_cross).transpose(1, 2)  # [T, dx, d_in]
    f = mean[:, d_in:] - (F @ mean[:, :d_in].unsqueeze(-1)).squeeze(-1)
    cov = sigma[:, d_in:, d_in:] - F @ sigma_in @ F.transpose(1, 2)
    cov = 0.5 * (cov + cov.transpose(1, 2))
    return LinearGaussianDynamics(F=F.to(dtype), f=f.to(dtype), Sigma=cov.to(dtype))


# ---------------------------------------------------------------------------------------------------------
# Neural-network model (the ablation)
# ---------------------------------------------------------------------------------------------------------


class NNDynamics(nn.Module):
    """An MLP model x_{t+1} = x_t + g(x_t, u_t), trained by mean squared error with Adam.

    hidden: (200, 200), ours: the size of the NAF network of Gu et al. 2016 (Sec. 6).
    Inputs and the target difference are standardized with statistics of the training data (ours; as in
    Nagabandi et al. 2018), so one learning rate suits every task's scales.
    """

    def __init__(self, state_dim: int, action_dim: int, hidden: Sequence[int] = (200, 200)):
        super().__init__()
        layers: list[nn.Module] = []
        width = state_dim + action_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, state_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("in_mean", torch.zeros(state_dim + action_dim))
        self.register_buffer("in_std", torch.ones(state_dim + action_dim))
        self.register_buffer("out_mean", torch.zeros(state_dim))
        self.register_buffer("out_std", torch.ones(state_dim))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The predicted difference x_{t+1} - x_t."""
        z = (torch.cat([x, u], dim=-1) - self.in_mean) / self.in_std
        return self.net(z) * self.out_std + self.out_mean

    def predict(self, t: int | torch.Tensor, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The predicted next state; ``t`` is ignored (the model is time-invariant)."""
        return x + self(x, u)

    def fit(self, X: torch.Tensor, U: torch.Tensor, epochs: int, generator: torch.Generator,
            lr: float = 1e-3, batch_size: int = 64) -> list[float]:
        """Train on every transition of X [N, T+1, dx], U [N, T, du]; returns the mean loss per epoch.

        lr: 1e-3, Adam's default (Kingma & Ba 2015). batch_size: 64, ours.
        The loss is the MSE of the standardized difference. Minibatch order comes from ``generator``.
        """
        x = X[:, :-1].reshape(-1, X.shape[-1])
        u = U.reshape(-1, U.shape[-1])
        target = (X[:, 1:] - X[:, :-1]).reshape(-1, X.shape[-1])
        z = torch.cat([x, u], dim=-1)
        # A floor on the standard deviations keeps constant inputs (or outputs) from dividing by zero.
        self.in_mean.copy_(z.mean(0))
        self.in_std.copy_(z.std(0).clamp_min(1e-6))
        self.out_mean.copy_(target.mean(0))
        self.out_std.copy_(target.std(0).clamp_min(1e-6))
        z_norm = (z - self.in_mean) / self.in_std
        target_norm = (target - self.out_mean) / self.out_std
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        losses = []
        for _ in range(epochs):
            order = torch.randperm(z.shape[0], generator=generator, device=generator.device).to(z.device)
            total = 0.0
            for start in range(0, z.shape[0], batch_size):
                idx = order[start:start + batch_size]
                loss = (self.net(z_norm[idx]) - target_norm[idx]).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * idx.numel()
            losses.append(total / z.shape[0])
        return losses
