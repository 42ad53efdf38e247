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

``TorchRMSprop`` is torch's RMSprop number for number, with its square root taken where no input is subnormal
(``sqrt_without_subnormals``): MinAtar's DQN (torch's RMSprop) spent a sixth of its time there.
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


def _closure_loss(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _rmsprop_state(states, p: torch.Tensor, centered: bool) -> dict:
    """p's state, created at its first step with torch.optim.RMSprop's keys, its step counted."""
    state = states[p]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32)
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if centered:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["step"] += 1
    return state


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
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = _rmsprop_state(self.state, p, group["centered"])
                square_avg = state["square_avg"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
                if group["centered"]:
                    grad_avg = state["grad_avg"].mul_(alpha).add_(g, alpha=1 - alpha)
                    denom = square_avg.addcmul(grad_avg, grad_avg, value=-1)
                else:
                    denom = square_avg.clone()
                p.addcdiv_(g, denom.add_(eps).sqrt_(), value=-lr)
        return loss


SQRT_SCALE, SQRT_UNSCALE = float(2**24), float(2**-12)
"""sqrt(x) = sqrt(x 2^24) 2^-12: multiplying by a power of two is exact, and a correctly rounded square root of
x 4^k is that of x times 2^k, so the result is torch's to the bit for every normal x up to 2e31 (float32's
maximum over 2^24). A subnormal x (below 1.2e-38) becomes a normal number first."""


def sqrt_without_subnormals(x: torch.Tensor) -> torch.Tensor:
    """x.sqrt_() computed as sqrt(x 2^24) 2^-12 (SQRT_SCALE), in place.

    The square root of a subnormal number takes about 25 times as long on this machine's CPU (9.8 against 0.37
    ms for 5 x 1024 x 128 floats, one thread), and RMSprop's second-moment average decays into subnormals
    wherever a weight's gradient stays zero (MinAtar's sparse boolean inputs): 0.95^1,700 of a squared gradient.
    Scaled, every such x is normal. Equal to torch's sqrt for normal x (SQRT_SCALE); for a subnormal x the two
    differ only below 1.1e-19, which vanishes when eps is added afterwards, as RMSprop does (eps above 1e-12).
    """
    return x.mul_(SQRT_SCALE).sqrt_().mul_(SQRT_UNSCALE)


class TorchRMSprop(torch.optim.RMSprop):
    """torch.optim.RMSprop (eps outside the square root) without momentum, bit for bit, its square root taken by
    ``sqrt_without_subnormals`` (for eps above 1e-12; torch's own below); its state dict is torch's, so
    checkpoints load either way.

    The update of torch 2.x's single-tensor path: g <- g + wd p; v <- alpha v + (1 - alpha) g^2;
    centered: g_bar <- lerp(g_bar, g, 1 - alpha), v' = v - g_bar^2; p <- p - lr g / (sqrt(v') + eps).
    """

    def __init__(self, params, lr: float, alpha: float, eps: float, centered: bool, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay)
        # the scaled root equals torch's after eps is added only for eps above 1e-12 (sqrt_without_subnormals)
        self._sqrt_ = sqrt_without_subnormals if eps > 1e-12 else torch.Tensor.sqrt_

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group in self.param_groups:
            lr, alpha, eps, weight_decay = group["lr"], group["alpha"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = _rmsprop_state(self.state, p, group["centered"])
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                square_avg = state["square_avg"].mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                if group["centered"]:
                    grad_avg = state["grad_avg"].lerp_(grad, 1 - alpha)
                    avg = self._sqrt_(square_avg.addcmul(grad_avg, grad_avg, value=-1))
                else:
                    avg = self._sqrt_(square_avg.clone())
                p.addcdiv_(grad, avg.add_(eps), value=-lr)
        return loss
