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

``TorchRMSprop`` is torch's RMSprop number for number, with its square root taken on inputs moved off the CPU's
slow path (``sqrt_add_``): that root is slow on zeros and subnormal numbers, and MinAtar's DQN spent about 14% of
its time in it.
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


SQRT_SCALE, SQRT_UNSCALE, SQRT_FLOOR = float(2**24), float(2**-12), float(2**-122)
SQRT_EPS_MIN = 1e-10
"""sqrt_add_'s constants: its scale and unscale (powers of two), the normal number it adds to the scaled input,
and the smallest eps for which it is exact."""


def sqrt_add_(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x.sqrt_().add_(eps), in place, bit for bit for eps >= SQRT_EPS_MIN, without the CPU's slow inputs.

    On this machine's CPU torch's square root is 5 to 25 times slower on zeros and subnormal numbers (below
    1.2e-38) than on normal ones: for 5 x 1024 x 128 floats, one thread, 0.35 ms normal, 1.6 ms all zero, 2.6 ms
    half zero, 9.8 ms all subnormal. RMSprop's second-moment average is zero wherever a weight's gradient has
    been zero (MinAtar's sparse boolean inputs, dead units) and subnormal while such an average decays to zero.

    Computed as sqrt(x 2^24 + 2^-122) 2^-12 + eps. Multiplying by a power of two is exact, and a correctly
    rounded square root of x 4^k is that of x times 2^k. Every scaled input is then a positive normal number
    or keeps its sign. Adding 2^-122 changes no scaled value of 2^-97 or more (below half a unit in its last
    place), so the root is torch's to the bit for every x from 2^-121 (3.8e-37) to 2e31. Below that, both roots
    are under 6.1e-19, less than half a unit in the last place of any eps >= 1e-10, so both sums round to eps.
    Negative x give NaN as torch's do, except in (-1.1e-44, 0), where torch's NaN becomes eps.
    """
    if eps < SQRT_EPS_MIN:
        return x.sqrt_().add_(eps)
    return x.mul_(SQRT_SCALE).add_(SQRT_FLOOR).sqrt_().mul_(SQRT_UNSCALE).add_(eps)


class TorchRMSprop(torch.optim.RMSprop):
    """torch.optim.RMSprop (eps outside the square root) without momentum, bit for bit, its square root and eps
    taken by ``sqrt_add_``; its state dict is torch's, so checkpoints load either way.

    The update of torch 2.x's single-tensor path: g <- g + wd p; v <- alpha v + (1 - alpha) g^2;
    centered: g_bar <- lerp(g_bar, g, 1 - alpha), v' = v - g_bar^2; p <- p - lr g / (sqrt(v') + eps).
    """

    def __init__(self, params, lr: float, alpha: float, eps: float, centered: bool, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay)

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
                    avg = sqrt_add_(square_avg.addcmul(grad_avg, grad_avg, value=-1), eps)
                else:
                    avg = sqrt_add_(square_avg.clone(), eps)
                p.addcdiv_(grad, avg, value=-lr)
        return loss
