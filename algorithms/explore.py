"""Exploration for continuous actions: action noise, and iLQG controllers on fitted local models.

Noise processes (batched over the member axis, member k drawing from its own generator only):
- ``GaussianNoise``: independent N(0, sigma^2) per step.
- ``OrnsteinUhlenbeckNoise``: temporally correlated noise, DDPG's choice (Lillicrap et al. 2016, Sec. 7);
  NAF's Algorithm 1 adds "a random process N" in the same place (Gu et al. 2016).

Model-guided exploration (Gu et al. 2016, Sec. 5 and Algorithm 2): with probability 1 - p an episode follows
pi_iLQG(u_t | x_t) = N(u_hat_t + k_t + K_t (x_t - x_hat_t), c Sigma_t), one iLQG iteration (Tassa et al.
2012) on the fitted time-varying linear dynamics (dynamics.py) and a quadratic model of the reward. Here:
``lqr_backward`` (the Riccati recursion for time-varying affine dynamics and quadratic cost),
``fit_quadratic_reward``, and ``ilqg_step``. The LQR/iLQG code is for one member.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from algorithms.dynamics import LinearGaussianDynamics
from algorithms.members import member_randn

# ---------------------------------------------------------------------------------------------------------
# Action noise on the member axis
# ---------------------------------------------------------------------------------------------------------


class GaussianNoise:
    """eps_t ~ N(0, sigma^2 I), independent over steps; one row per member: [M, action_dim].

    sigma: 0.1, the exploration noise of TD3 (Fujimoto et al. 2018); Gu et al. 2016 (Sec. 6) swept
        {0.1, 0.3, 1.0}.
    """

    def __init__(self, generators: Sequence[torch.Generator], action_dim: int, sigma: float = 0.1,
                 device: torch.device | str = "cpu"):
        self.generators = list(generators)
        self.action_dim = action_dim
        self.sigma = sigma
        self.device = device

    def sample(self) -> torch.Tensor:
        return self.sigma * member_randn(self.generators, (self.action_dim,), self.device)

    def reset(self, done: torch.Tensor | None = None) -> None:
        """Nothing to reset: the noise has no memory (the method keeps one interface for all noises)."""


class OrnsteinUhlenbeckNoise:
    """Euler-Maruyama steps of dX = theta (mu - X) dt + sigma dW, one process per member: [M, action_dim].

    X_{k+1} = X_k + theta (mu - X_k) dt + sigma sqrt(dt) eps_k, eps_k ~ N(0, I), X reset to mu.
    theta: 0.15, sigma: 0.2, Lillicrap et al. 2016 (Sec. 7).
    dt: 1.0, ours: one process step per environment step, the reading of Lillicrap et al.'s theta and
        sigma as per-step values (OpenAI Baselines' implementation uses dt = 0.01 instead).
    mu: 0.0, the process mean (Lillicrap et al. 2016).
    The discrete process is AR(1) with coefficient a = 1 - theta dt and innovation variance sigma^2 dt, so
    its stationary variance is sigma^2 dt / (1 - a^2) = sigma^2 / (theta (2 - theta dt)); as dt -> 0 this
    tends to the continuous process's sigma^2 / (2 theta) (0.144 vs 0.133 at the defaults).
    """

    def __init__(self, generators: Sequence[torch.Generator], action_dim: int, theta: float = 0.15,
                 sigma: float = 0.2, dt: float = 1.0, mu: float = 0.0, device: torch.device | str = "cpu"):
        if not 0 < theta * dt < 2:
            raise ValueError(f"theta * dt must lie in (0, 2) for a stationary process, got {theta * dt}")
        self.generators = list(generators)
        self.action_dim = action_dim
        self.theta, self.sigma, self.dt, self.mu = theta, sigma, dt, mu
        self.device = device
        self.state = torch.full((len(self.generators), action_dim), mu, device=device)

    def stationary_variance(self) -> float:
        """Var X_infinity per dimension of the discretized process (see the class docstring)."""
        return self.sigma ** 2 / (self.theta * (2 - self.theta * self.dt))

    def sample(self) -> torch.Tensor:
        eps = member_randn(self.generators, (self.action_dim,), self.device)
        self.state = (self.state + self.theta * (self.mu - self.state) * self.dt
                      + self.sigma * math.sqrt(self.dt) * eps)
        return self.state

    def reset(self, done: torch.Tensor | None = None) -> None:
        """Restart the process at mu for the members whose episode ended (all members if done is None)."""
        if done is None:
            self.state = torch.full_like(self.state, self.mu)
        else:
            mask = torch.as_tensor(done, dtype=torch.bool, device=self.state.device).unsqueeze(-1)
            self.state = torch.where(mask, torch.full_like(self.state, self.mu), self.state)


# ---------------------------------------------------------------------------------------------------------
# LQR: time-varying affine dynamics, quadratic cost
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LQRSolution:
    """The optimal affine feedback u_t = K_t x_t + k_t and the quadratic cost-to-go.

    K: [T, du, dx]; k: [T, du]; V: [T+1, dx, dx] and v: [T+1, dx], the cost-to-go 1/2 x^T V_t x + v_t^T x
    (+ const), V_T = 0; Quu: [T, du, du], the (regularized) action curvature of the state-action cost-to-go.
    """

    K: torch.Tensor
    k: torch.Tensor
    V: torch.Tensor
    v: torch.Tensor
    Quu: torch.Tensor


def _per_step(a: torch.Tensor, horizon: int, ndim: int) -> torch.Tensor:
    """Broadcast a time-invariant array (ndim dims) to [T, ...]; per-step arrays pass through."""
    return a.expand(horizon, *a.shape) if a.dim() == ndim else a


def lqr_backward(F: torch.Tensor, f: torch.Tensor, C: torch.Tensor, c: torch.Tensor, T: int | None = None,
                 reg: float = 0.0) -> LQRSolution:
    """Minimize sum_t 1/2 z_t^T C_t z_t + c_t^T z_t, z_t = [x_t; u_t], subject to x_{t+1} = F_t z_t + f_t.

    F: [T, dx, dx+du], f: [T, dx], C: [T, D, D], c: [T, D] with D = dx + du; any of them may omit the
    leading T (time-invariant), and then T must be given. No terminal cost (V_T = 0). For a reward,
    pass C = -R, c = -r.
    reg: added to Q_uu before it is inverted (the Levenberg-Marquardt regularization that Tassa et al. 2012
        discuss; they also propose one on V_xx); 0 gives the exact Riccati solution. The cost-to-go update
        is written in the form of Tassa et al. 2012 (eq. 11), which stays consistent with the gains when
        reg > 0.
    Raises torch.linalg.LinAlgError where Q_uu + reg I is not positive definite.
    """
    if F.dim() == 2 and T is None:
        raise ValueError("time-invariant F needs the horizon T")
    horizon = T if T is not None else F.shape[0]
    F, f = _per_step(F, horizon, 2), _per_step(f, horizon, 1)
    C, c = _per_step(C, horizon, 2), _per_step(c, horizon, 1)
    if not F.shape[0] == f.shape[0] == C.shape[0] == c.shape[0] == horizon:
        raise ValueError(f"per-step F, f, C, c must all have T = {horizon} steps")
    dx = F.shape[1]
    du = F.shape[2] - dx
    V = F.new_zeros(horizon + 1, dx, dx)
    v = F.new_zeros(horizon + 1, dx)
    K = F.new_zeros(horizon, du, dx)
    k = F.new_zeros(horizon, du)
    Quu_out = F.new_zeros(horizon, du, du)
    eye = torch.eye(du, dtype=F.dtype, device=F.device)
    for t in reversed(range(horizon)):
        Ft = F[t]
        Q = C[t] + Ft.T @ V[t + 1] @ Ft
        q = c[t] + Ft.T @ (V[t + 1] @ f[t] + v[t + 1])
        Qxx, Qxu, Qux, Quu = Q[:dx, :dx], Q[:dx, dx:], Q[dx:, :dx], Q[dx:, dx:]
        qx, qu = q[:dx], q[dx:]
        Quu_reg = 0.5 * (Quu + Quu.T) + reg * eye
        chol = torch.linalg.cholesky(Quu_reg)
        K[t] = -torch.cholesky_solve(Qux, chol)
        k[t] = -torch.cholesky_solve(qu.unsqueeze(-1), chol).squeeze(-1)
        Vt = Qxx + K[t].T @ Quu @ K[t] + K[t].T @ Qux + Qxu @ K[t]
        V[t] = 0.5 * (Vt + Vt.T)
        v[t] = qx + K[t].T @ Quu @ k[t] + K[t].T @ qu + Qxu @ k[t]
        Quu_out[t] = Quu_reg
    return LQRSolution(K=K, k=k, V=V, v=v, Quu=Quu_out)


# ---------------------------------------------------------------------------------------------------------
# A quadratic reward model and one iLQG iteration
# ---------------------------------------------------------------------------------------------------------


@dataclass
class QuadraticReward:
    """r(x, u) = 1/2 z^T C z + c^T z + c0 with z = [x; u]; C: [D, D] symmetric, c: [D], c0: scalar tensor.

    May carry a leading time dimension ([T, D, D], [T, D], [T]) for a per-step model.
    """

    C: torch.Tensor
    c: torch.Tensor
    c0: torch.Tensor

    def __call__(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        z = torch.cat([x, u], dim=-1)
        quadratic = (z.unsqueeze(-2) @ self.C @ z.unsqueeze(-1)).squeeze((-1, -2))
        return 0.5 * quadratic + (self.c * z).sum(-1) + self.c0


def fit_quadratic_reward(X: torch.Tensor, U: torch.Tensor, R: torch.Tensor,
                         ridge: float = 1e-6) -> QuadraticReward:
    """Least-squares fit of a quadratic r(x, u) to samples X [N, dx], U [N, du], R [N].

    iLQG needs a second-order expansion of the reward (Tassa et al. 2012); where the reward function is
    not available in closed form, it is estimated here from observed (x, u, r). Pool the samples
    you want one model for (one step, or all steps of the latest episodes).
    ridge: 1e-6, ours: a small L2 penalty so the normal equations stay solvable when the samples do not
        span all (D+1)(D+2)/2 quadratic features; computed in float64.
    """
    dtype = X.dtype
    z = torch.cat([X, U], dim=-1).double()
    n, dim = z.shape
    rows, cols = torch.triu_indices(dim, dim, device=z.device)
    features = torch.cat([z[:, rows] * z[:, cols], z, z.new_ones(n, 1)], dim=1)
    gram = features.T @ features + ridge * torch.eye(features.shape[1], dtype=z.dtype, device=z.device)
    w = torch.linalg.solve(gram, features.T @ R.double())
    n_quad = rows.numel()
    # w_ij multiplies z_i z_j: 1/2 z^T C z puts C_ij z_i z_j (i < j) and 1/2 C_ii z_i^2 there.
    C = z.new_zeros(dim, dim)
    C[rows, cols] = w[:n_quad]
    C = C + C.T
    return QuadraticReward(C=C.to(dtype), c=w[n_quad:n_quad + dim].to(dtype), c0=w[-1].to(dtype))


@dataclass
class ILQGController:
    """A time-varying linear-Gaussian controller u_t ~ N(K_t x_t + k_t, cov_scale * covariance_t).

    K: [T, du, dx]; k: [T, du]; covariance: [T, du, du], the inverse of the (regularized) Q_uu of the cost,
    the maximum-entropy choice of guided policy search (Levine & Koltun 2013; Levine & Abbeel 2014).
    X_nominal: [T+1, dx], U_nominal: [T, du], the controller's mean trajectory under the model's mean
    dynamics from x0: the nominal trajectory for the next iteration.
    reg: the Levenberg-Marquardt term that was needed to make Q_uu positive definite.
    """

    K: torch.Tensor
    k: torch.Tensor
    covariance: torch.Tensor
    X_nominal: torch.Tensor
    U_nominal: torch.Tensor
    reg: float

    def mean(self, t: int, x: torch.Tensor) -> torch.Tensor:
        return (self.K[t] @ x.unsqueeze(-1)).squeeze(-1) + self.k[t]

    def sample(self, t: int, x: torch.Tensor, generator: torch.Generator,
               cov_scale: float = 1.0) -> torch.Tensor:
        """An action from N(K_t x + k_t, cov_scale * covariance_t).

        cov_scale: 1.0, the maximum-entropy covariance itself; Gu et al. 2016 scale it by a constant c
        (Algorithm 2's pi_iLQG), which matters because Q_uu^-1 grows as the reward scale shrinks.
        """
        mean = self.mean(t, x)
        eps = torch.randn(mean.shape, generator=generator, device=generator.device, dtype=mean.dtype)
        chol = torch.linalg.cholesky(cov_scale * self.covariance[t])
        return mean + (chol @ eps.to(mean.device).unsqueeze(-1)).squeeze(-1)


def ilqg_step(dynamics: LinearGaussianDynamics, reward: QuadraticReward, x0: torch.Tensor,
              X_nominal: torch.Tensor, U_nominal: torch.Tensor, step_size: float = 1.0,
              reg_min: float = 1e-6, reg_max: float = 1e10, reg_factor: float = 10.0) -> ILQGController:
    """One iLQG iteration around a nominal trajectory: backward pass, then forward pass on the model.

    dynamics: the fitted time-varying linear-Gaussian model (its mean is the linearization; the noise does
        not change the iLQG gains). reward: a QuadraticReward shared by all steps or per step ([T, ...]).
    x0: [dx], the initial state of the forward pass. X_nominal: [T+1, dx], U_nominal: [T, du], e.g. the
        mean of the episodes the model was fitted on (Gu et al. 2016, Algorithm 2, iLQG.OneStep(B_f, M)).
    The backward pass solves the LQR problem for deviations (dx_t, du_t) from the nominal, with the cost
    -r expanded to second order at the nominal and the model's defect F_t z_hat_t + f_t - x_hat_{t+1} as the
    affine term; the controller is u_t = u_hat_t + step_size k_t + K_t (x_t - x_hat_t) (Tassa et al. 2012,
    eq. 12), returned in absolute coordinates u_t = K_t x_t + k'_t.
    step_size: 1.0, the full step that line searches start from (Tassa et al. 2012); with linear dynamics
        and a quadratic reward it is the exact optimum of the models.
    reg_min, reg_max, reg_factor: where Q_uu of the cost is not positive definite (a reward model that is
        not concave in u), retry with reg = reg_min, reg_min * reg_factor, ... up to reg_max; the schedule is
        ours, in the spirit of Tassa et al. 2012 (mu_min = 1e-6 there).
    """
    F, f = dynamics.F, dynamics.f
    horizon = F.shape[0]
    C = _per_step(reward.C, horizon, 2)
    c = _per_step(reward.c, horizon, 1)
    z_hat = torch.cat([X_nominal[:-1], U_nominal], dim=-1)
    # Second-order expansion of the cost -r at the nominal, in deviation coordinates.
    cost_C = -C
    cost_c = -((C @ z_hat.unsqueeze(-1)).squeeze(-1) + c)
    defect = (F @ z_hat.unsqueeze(-1)).squeeze(-1) + f - X_nominal[1:]
    reg = 0.0
    while True:
        try:
            sol = lqr_backward(F, defect, cost_C, cost_c, reg=reg)
            break
        except torch.linalg.LinAlgError:
            reg = reg_min if reg == 0.0 else reg * reg_factor
            if reg > reg_max:
                raise
    K = sol.K
    k = U_nominal + step_size * sol.k - (K @ X_nominal[:-1].unsqueeze(-1)).squeeze(-1)
    covariance = torch.linalg.inv(sol.Quu)
    covariance = 0.5 * (covariance + covariance.transpose(-1, -2))
    xs = [x0]
    us = []
    for t in range(horizon):
        u = (K[t] @ xs[-1]) + k[t]
        us.append(u)
        xs.append(dynamics.predict(t, xs[-1], u))
    return ILQGController(K=K, k=k, covariance=covariance, X_nominal=torch.stack(xs),
                          U_nominal=torch.stack(us), reg=reg)
