"""RMSprop as DeepMind ran it for DQN: centered, with epsilon inside the square root.

The update (Graves 2013, Eqs. 38-40, without momentum, as in DeepMind's DQN code for Mnih et al. 2015):

    g_bar <- alpha g_bar + (1 - alpha) g
    g2    <- alpha g2    + (1 - alpha) g^2
    theta <- theta - lr g / sqrt(g2 - g_bar^2 + eps)          (centered)
    theta <- theta - lr g / sqrt(g2 + eps)                    (not centered)

torch.optim.RMSprop adds eps outside the square root instead, lr g / (sqrt(...) + eps), which makes steps
smaller where the gradient's variance is small. Dopamine (1e-5 inside the square root) and pfrl
(``RMSpropEpsInsideSqrt``) ship the same correction. Every operation is element-wise, so the members stacked in
one parameter tensor stay independent (DESIGN.md, the member axis).
"""

from __future__ import annotations

import torch

NATURE_EPS_MEAN_GRADIENT = 0.01 / 32**2
"""DeepMind's eps for a loss averaged over the minibatch (ours, derived; about 9.8e-6).

Mnih et al. 2015 (Extended Data Table 1, "min squared gradient" 0.01) added 0.01 inside the square root to
statistics of the gradient *summed* over a minibatch of 32 (DeepMind's Lua code back-propagates unaveraged
targets). With G = 32 g for the mean gradient g, g2 and g_bar^2 scale by 32^2, so
lr G / sqrt(var(G) + 0.01) = lr g / sqrt(var(g) + 0.01 / 32^2): the same step for a mean-gradient loss needs
eps = 0.01 / 1024 = 9.77e-6 inside the root, matching Dopamine's 1e-5. Its square root, 0.0031, is the scale
below which eps dominates the denominator (the ~0.0031 quoted in issue 9 is that scale, not eps itself).
"""


class CenteredRMSprop(torch.optim.Optimizer):
    """RMSprop with eps inside the square root; centered (Graves 2013) unless ``centered=False``.

    Args:
      lr: step size.
      alpha: decay of the gradient and squared-gradient averages (Mnih et al. 2015: 0.95).
      eps: added to the (centered) second moment inside the square root (see NATURE_EPS_MEAN_GRADIENT).
      centered: subtract the squared mean gradient, as DeepMind's DQN code does (Graves 2013).
    """

    def __init__(self, params, lr: float, alpha: float = 0.95, eps: float = NATURE_EPS_MEAN_GRADIENT,
                 centered: bool = True):
        if lr <= 0 or not 0 <= alpha < 1 or eps <= 0:
            raise ValueError(f"CenteredRMSprop needs lr > 0, 0 <= alpha < 1, eps > 0; got {lr}, {alpha}, {eps}")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "centered": centered})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["square_avg"] = torch.zeros_like(p)
                    if group["centered"]:
                        state["grad_avg"] = torch.zeros_like(p)
                state["step"] += 1
                square_avg = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
                if group["centered"]:
                    grad_avg = state["grad_avg"].mul_(alpha).add_(g, alpha=1 - alpha)
                    denom = square_avg.addcmul(grad_avg, grad_avg, value=-1)
                else:
                    denom = square_avg.clone()
                p.addcdiv_(g, denom.add_(eps).sqrt_(), value=-lr)
        return loss
