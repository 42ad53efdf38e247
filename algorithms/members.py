"""The member axis: M independent learners trained in lockstep, on member-batched layers.

A member is one seed (or one hyperparameter point) of an algorithm. A network is written once as an ordinary
``nn.Module`` for one member (readable, CleanRL style) and built for M members by ``batch_members``: one copy
per seed, each initialized from its own seed, whose learnable layers are then fused into member-batched layers
holding parameters [M, ...]. A batched layer computes every member in one call (a linear layer is one batched
matmul over the member axis), so the network's own forward code, written with leading-dimension-agnostic
operations, runs on inputs [M, B, ...] unchanged.

Learning needs no functional transforms: a loss is the sum over members of each member's mean loss, and
ordinary autograd differentiates it. Members share no parameter, so each member's gradient is exactly its own;
Adam and RMSprop are element-wise, so one optimizer over the stacked tensors updates every member exactly as if
it had its own. (torch.func's vmap/functional_call cost far more than the arithmetic of small networks on a CPU:
a DDPG profile spent 20 of 29 s in that machinery.) Random numbers come from per-member streams derived from
the member's seed and a stream name, so member k of a run with seeds [0..M) follows the same trajectory as a
run with the single seed k.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from envs.seeding import derive_seed, numpy_generators, torch_generators  # noqa: F401 - the members' streams


def member_rand(gens: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """Uniform [0, 1) numbers of shape [M, *shape], member k drawn from gens[k] only."""
    if len(gens) == 1:
        return torch.rand(tuple(shape), generator=gens[0], device=gens[0].device).unsqueeze(0).to(device)
    return torch.stack([torch.rand(tuple(shape), generator=g, device=g.device) for g in gens]).to(device)


def member_randn(gens: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """Standard normal numbers of shape [M, *shape], member k drawn from gens[k] only."""
    if len(gens) == 1:
        return torch.randn(tuple(shape), generator=gens[0], device=gens[0].device).unsqueeze(0).to(device)
    return torch.stack([torch.randn(tuple(shape), generator=g, device=g.device) for g in gens]).to(device)


class UniformBlocks:
    """Uniform [0, 1) float32 numbers, member k's from gens[k] only, drawn from each CPU generator a block at a
    time: a step's draw for M members is then one slice of numbers already drawn instead of M generator calls
    (DQN on CartPole at 8 members made 16 such calls per agent step: about 3% of its time under cProfile).

    torch's CPU generator gives a block of n uniform floats exactly as n successive draws (tested), so member
    k reads the numbers it would have drawn call by call, and buffering changes no result. The numbers drawn
    but not yet read are state: ``state_dict`` carries them, so a resumed run reads on where it stopped.
    """

    def __init__(self, gens: Sequence[torch.Generator], block: int = 1024):
        if any(g.device.type != "cpu" for g in gens):
            raise ValueError("UniformBlocks reads CPU generators only")
        self.gens, self.block = list(gens), block
        self._buf = np.empty((len(self.gens), 0), np.float32)  # member k's unread numbers: _buf[k, _pos[k]:]
        # While every member has read as many numbers (always, unless take_member was called), their common
        # position is the Python int _at and _pos is None: a take is then one slice and no array arithmetic,
        # which on the acting path runs right after an update has pushed it out of the cache.
        self._at: int = 0
        self._pos: np.ndarray | None = None

    def take(self, n: int) -> np.ndarray:
        """[M, n]: the next n numbers of every member."""
        if self._pos is None:
            if self._buf.shape[1] - self._at < n:
                self._extend(n)
            at = self._at
            self._at = at + n
            return self._buf[:, at:at + n]
        if self._buf.shape[1] - int(self._pos.max()) < n:
            self._extend(n)
        start = self._pos.copy()
        self._pos += n
        return np.take_along_axis(self._buf, start[:, None] + np.arange(n), axis=1)

    def take_member(self, k: int, n: int) -> np.ndarray:
        """[n]: the next n numbers of member k."""
        pos = self._positions()
        if self._buf.shape[1] - int(pos[k]) < n:
            self._extend(n)
            pos = self._positions()
        start = int(pos[k])
        pos[k] += n
        self._set_positions(pos)
        return self._buf[k, start:start + n]

    def _positions(self) -> np.ndarray:
        """Every member's position as an array (a copy when aligned)."""
        return np.full(len(self.gens), self._at, np.int64) if self._pos is None else self._pos

    def _set_positions(self, pos: np.ndarray) -> None:
        """Store positions, as the common int when they are all equal."""
        if (pos == pos[0]).all():
            self._at, self._pos = int(pos[0]), None
        else:
            self._pos = pos

    def _extend(self, n: int) -> None:
        """Append a block (at least n) to every member's unread numbers, dropping what all have read."""
        pos = self._positions()
        read = int(pos.min())
        fresh = [torch.rand(max(self.block, n), generator=g).numpy() for g in self.gens]
        self._buf = np.concatenate([self._buf[:, read:], np.stack(fresh)], axis=1)
        self._set_positions(pos - read)

    def state_dict(self) -> dict:
        return {"unread": [torch.from_numpy(self._buf[k, p:].copy()) for k, p in enumerate(self._positions().tolist())]}

    def load_state_dict(self, state: dict) -> None:
        rows = [t.numpy() for t in state["unread"]]
        width = max(len(r) for r in rows)
        self._buf = np.zeros((len(rows), width), np.float32)
        pos = np.array([width - len(r) for r in rows], np.int64)  # each member's unread numbers end the row
        for k, r in enumerate(rows):
            self._buf[k, pos[k]:] = r
        self._set_positions(pos)


# ---------------------------------------------------------------------------------------------------------
# Member-batched layers
# ---------------------------------------------------------------------------------------------------------


# Output widths below this are "narrow": their weight is kept in torch's layout, [M, out, in] (see MemberLinear).
NARROW_OUT = 16


class MemberLinear(nn.Module):
    """M linear layers: weight [M, in, out] (narrow layers: [M, out, in]), bias [M, 1, out]; state dicts hold
    torch's layouts, [M, out, in] and [M, out].

    Input [M, ..., in] -> output [M, ..., out]: one ``baddbmm`` for every member (``member_linear``). The
    weight is kept as the right-hand factor of that product rather than as torch's [out, in]: the product
    then reads it without a transpose, and autograd's weight gradient comes in the parameter's own layout
    instead of being copied into it after every backward pass. Measured, one thread, forward + backward +
    Adam of a 256-256 MLP, batch 64: 4.3-4.4 against 5.2-7.2 ms for 8 members, 0.72-0.75 against 0.77-0.90 ms
    for one. State dicts (checkpoints, member_state exports) keep torch's layout through the two hooks below.

    A narrow layer (fewer than NARROW_OUT outputs: a Q-head over a few actions, an actor's action) keeps
    torch's layout instead: MKL's batched product with fewer than 16 output columns is slow (one thread,
    8 members, batch 64, 84 inputs, 2 outputs: 47 us against 13 us for the same product with the weight
    read transposed, and 52 against 11 us for the weight gradient computed as x^T g rather than g^T x), so
    the forward pass reads the weight transposed and its backward pass is written out (``NarrowLinear``).
    """

    def __init__(self, layers: Sequence[nn.Linear]):
        super().__init__()
        self.in_features, self.out_features = layers[0].in_features, layers[0].out_features
        self.narrow = self.out_features < NARROW_OUT
        weights = [layer.weight.detach() if self.narrow else layer.weight.detach().t() for layer in layers]
        self.weight = nn.Parameter(torch.stack(weights).contiguous())
        # [M, 1, out]: the product's bias as it broadcasts over rows, so no forward pass reshapes it (a view
        # operation per layer and call, and its backward, on the small layers' per-operation-bound path)
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1))
        self.register_state_dict_post_hook(_to_torch_layout)
        self.register_load_state_dict_pre_hook(_from_torch_layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 3 else x.reshape(x.shape[0], -1, self.in_features)
        y = member_linear(flat, self.weight, self.bias, self.narrow)
        return y if x.dim() == 3 else y.reshape(*x.shape[:-1], self.out_features)


def member_linear(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, narrow: bool) -> torch.Tensor:
    """[M, N, in] -> [M, N, out] with weight [M, in, out] (narrow: [M, out, in]) and bias [M, 1, out]: one
    batched matmul (one column: an element-wise product and a sum, below)."""
    if narrow:
        if weight.shape[1] == 1:
            # A one-column product as a batched matmul goes to a matrix-vector kernel whose rounding depends on
            # the number of members (measured: up to 1e-5 apart for member 1 of 2 and a single member). A product
            # and a sum over the input axis rounds each row the same way for any M, and costs less than the
            # matmul with a zero column beside it that it replaces (one thread, 256 inputs, batch 64, forward +
            # backward: 82 against 147 us for one member, 155 against 475 us for eight).
            return (flat * weight).sum(-1, keepdim=True) + bias
        if torch.is_grad_enabled() and (weight.requires_grad or flat.requires_grad):
            return NarrowLinear.apply(flat, weight, bias)
        return torch.baddbmm(bias, flat, weight.transpose(1, 2))
    return torch.baddbmm(bias, flat, weight)


class NarrowLinear(torch.autograd.Function):
    """x W^T + b for a narrow layer's weight [M, out, in], with the gradients as the products MKL runs fast:
    dW = g^T x ([M, out, in], the parameter's layout) and dx = g W. Autograd's own backward pass of the same
    forward computes dW as (x^T g)^T, the slow narrow product. On one thread, member k's outputs and gradients
    do not depend on M, to the bit (tests), unlike the [M, in, out] product for 5 to 15 outputs and a single
    row (docs/performance.md, "Narrow output layers")."""

    @staticmethod
    def forward(ctx, flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat, weight)
        return torch.baddbmm(bias, flat, weight.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        flat, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        return (torch.bmm(grad, weight) if need_x else None, torch.bmm(grad.transpose(1, 2), flat) if need_w else None,
                grad.sum(1, keepdim=True) if need_b else None)


def _to_torch_layout(module, state_dict, prefix, local_metadata) -> None:
    if not module.narrow:
        state_dict[prefix + "weight"] = state_dict[prefix + "weight"].transpose(1, 2)
    state_dict[prefix + "bias"] = state_dict[prefix + "bias"].squeeze(1)


def _from_torch_layout(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                       error_msgs) -> None:
    # load_state_dict hands hooks its own shallow copy of the caller's dict: replacing an entry changes nothing
    # the caller holds
    if not module.narrow and prefix + "weight" in state_dict:
        state_dict[prefix + "weight"] = state_dict[prefix + "weight"].transpose(1, 2)
    if prefix + "bias" in state_dict:
        state_dict[prefix + "bias"] = state_dict[prefix + "bias"].unsqueeze(1)


class MemberConv2d(nn.Module):
    """M 2-D convolutions: weight [M, out, in, kh, kw], bias [M, out]; input [M, B, C, H, W].

    ``grouped``: one grouped convolution over all members (what a GPU wants), or one convolution per member
    (faster on a CPU: measured for the Nature CNN, batch 32, 8 members, 1 thread, 42 ms per member loop vs 99 ms
    grouped). The two give the same numbers (tested).
    """

    def __init__(self, layers: Sequence[nn.Conv2d], grouped: bool = False):
        super().__init__()
        first = layers[0]
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        if first.groups != 1:
            raise ValueError("member-batched convolutions support groups=1 layers only")
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        self.grouped = grouped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.shape[0]
        if not self.grouped:
            return torch.stack([F.conv2d(x[k], self.weight[k], self.bias[k], self.stride, self.padding,
                                         self.dilation) for k in range(m)])
        b, c, h, w = x.shape[1:]
        y = F.conv2d(x.transpose(0, 1).reshape(b, m * c, h, w), self.weight.flatten(0, 1), self.bias.flatten(),
                     self.stride, self.padding, self.dilation, groups=m)
        return y.reshape(b, m, -1, *y.shape[-2:]).transpose(0, 1)


class MemberBatchNorm1d(nn.Module):
    """M batch normalizations of [M, B, C] inputs: statistics over B, per member and channel.

    The arithmetic of nn.BatchNorm1d per member (biased variance to normalize, unbiased for the running
    estimate, exponential averaging with ``momentum``), with running statistics [M, C].
    """

    def __init__(self, layers: Sequence[nn.BatchNorm1d]):
        super().__init__()
        first = layers[0]
        self.eps, self.momentum = first.eps, first.momentum
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
        self.register_buffer("running_mean", torch.stack([layer.running_mean for layer in layers]))
        self.register_buffer("running_var", torch.stack([layer.running_var for layer in layers]))
        self.register_buffer("num_batches_tracked", torch.stack([layer.num_batches_tracked for layer in layers]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, c = x.shape[0], x.shape[-1]
        flat = x.reshape(m, -1, c)
        if self.training:
            var, mean = torch.var_mean(flat, dim=1, correction=0)
            with torch.no_grad():
                n = flat.shape[1]
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        y = (flat - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        return (y * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)).reshape(x.shape)


class MemberSequential(nn.Sequential):
    """An nn.Sequential of member-batched linear layers and element-wise activations, run as one call.

    The same layers, parameters and state-dict keys as the Sequential it replaces, and the same operations in
    the same order (so the same numbers); only the per-layer module calls are gone, which on a CPU cost more
    than a small layer's arithmetic (a DQN step of a 120-84 MLP made about 27 of them).
    """

    def __init__(self, *layers: nn.Module):
        super().__init__(*layers)
        # an activation right after a linear layer runs in place on that layer's fresh output: the same numbers
        # without allocating the activation's output, which for the stochastic searches' wide batches
        # (thousands of rows) costs more than the activation (measured: relu of 5 x 4,096 x 200 floats,
        # 2.05 against 0.46 ms). Autograd allows it: a linear layer's backward pass does not read its output.
        self._plan = [(layer, None) if isinstance(layer, MemberLinear)
                      else (None, (ELEMENTWISE_INPLACE if i > 0 and isinstance(layers[i - 1], MemberLinear)
                                   else ELEMENTWISE)[type(layer)])
                      for i, layer in enumerate(layers)]
        self.out_features = next(layer.out_features for layer in reversed(layers) if isinstance(layer, MemberLinear))

    @staticmethod
    def fusable(module: nn.Module) -> bool:
        """A plain Sequential of member-batched linear layers and ELEMENTWISE activations, with a linear one."""
        kinds = [type(layer) for layer in module] if type(module) is nn.Sequential else []
        return MemberLinear in kinds and all(k is MemberLinear or k in ELEMENTWISE for k in kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x if x.dim() == 3 else x.reshape(x.shape[0], -1, x.shape[-1])
        for layer, fn in self._plan:
            if fn is not None:
                flat = fn(flat)
            else:  # the parameters read from the layer's dict: nn.Module's attribute lookup costs ten times more
                params = layer._parameters
                flat = member_linear(flat, params["weight"], params["bias"], layer.narrow)
        return flat if x.dim() == 3 else flat.reshape(*x.shape[:-1], self.out_features)


# activations MemberSequential calls as functions (the kernels their modules call)
ELEMENTWISE: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {nn.ReLU: torch.relu, nn.Tanh: torch.tanh}
ELEMENTWISE_INPLACE: dict[type, Callable[[torch.Tensor], torch.Tensor]] = {nn.ReLU: torch.relu_,
                                                                          nn.Tanh: torch.tanh_}


BATCHED_LAYERS: dict[type, type] = {nn.Linear: MemberLinear, nn.Conv2d: MemberConv2d,
                                    nn.BatchNorm1d: MemberBatchNorm1d}


def _fuse(template: nn.Module, copies: Sequence[nn.Module], grouped_conv: bool) -> None:
    """Replace, in template, every learnable layer by the member-batched layer of its M copies."""
    for name, child in list(template.named_children()):
        parts = [getattr(c, name) for c in copies]
        kind = type(child)
        if kind in BATCHED_LAYERS:
            fused = MemberConv2d(parts, grouped_conv) if kind is nn.Conv2d else BATCHED_LAYERS[kind](parts)
            setattr(template, name, fused)
        elif any(True for _ in child.parameters(recurse=False)):
            raise TypeError(f"{kind.__name__} holds parameters but has no member-batched version; "
                            f"batchable: {', '.join(k.__name__ for k in BATCHED_LAYERS)}")
        else:
            _fuse(child, parts, grouped_conv)
            if MemberSequential.fusable(child):
                setattr(template, name, MemberSequential(*child))
    # buffers of other modules are constants of the architecture (e.g. the action box): one copy serves all
    for name, buf in template.named_buffers(recurse=False):
        if not all(torch.equal(buf, getattr(c, name)) for c in copies):
            raise ValueError(f"buffer {name!r} differs between members; only batched layers may hold member state")


def batch_members(make: Callable[[], nn.Module], seeds: Sequence[int], device: torch.device | str = "cpu",
                  stream: str = "init", grouped_conv: bool | None = None) -> nn.Module:
    """M copies of ``make()``, each initialized under the ``stream`` of its own seed, fused into one module.

    Member k's initial weights depend only on seed k (and equal those of ``make()`` under that seed). The
    returned module takes inputs [M, B, ...]. ``grouped_conv``: see MemberConv2d; None picks per-member
    convolutions on a CPU and grouped ones elsewhere.
    """
    device = torch.device(device)
    copies = []
    for s in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(s, stream))
            copies.append(make())
    fused = copy.deepcopy(copies[0])
    _fuse(fused, copies, device.type != "cpu" if grouped_conv is None else grouped_conv)
    if MemberSequential.fusable(fused):
        fused = MemberSequential(*fused)
    fused.num_members = len(seeds)
    return fused.to(device)


def member_state(module: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k's parameters and buffers as the state dict of the single-member module (export and tests)."""
    batched = {name for name, m in module.named_modules() if isinstance(m, tuple(BATCHED_LAYERS.values()))}
    out = {}
    for name, t in module.state_dict().items():
        owner = name.rpartition(".")[0]
        out[name] = (t[k] if owner in batched else t).detach().clone()
    return out


def member_grads(module: nn.Module, k: int) -> dict[str, torch.Tensor]:
    """Member k's gradients by parameter name, in the single-member module's layout (tests)."""
    out = {}
    for name, sub in module.named_modules():
        for pname, p in sub.named_parameters(recurse=False):
            g = p.grad[k]
            if isinstance(sub, MemberLinear):  # the single module's layouts: [out, in] and [out]
                if pname == "bias":
                    g = g.squeeze(0)
                elif not sub.narrow:
                    g = g.t()
            out[f"{name}.{pname}" if name else pname] = g
    return out


def member_parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    """Learnable tensors by name, each [M, ...]."""
    return dict(module.named_parameters())


# ---------------------------------------------------------------------------------------------------------
# Learning on the member axis
# ---------------------------------------------------------------------------------------------------------


def clip_member_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale each member's gradient (the .grad of [M, ...] tensors) to global L2 norm <= max_norm; norms [M]."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = sum(g.pow(2).flatten(1).sum(1) for g in grads).sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
    return norms


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online for every member at once (tau = 1 is a hard copy).

    Buffers (batch-norm statistics) are copied: the target normalizes with the online network's statistics.
    """
    polyak_lists(polyak_pairs(target, online), tau)


def polyak_pairs(target: nn.Module, online: nn.Module) -> tuple[list, list, list]:
    """The (target, online) parameter lists and buffer pairs polyak_lists updates; cache them on the hot path."""
    return ([p for _, p in target.named_parameters()], [p for _, p in online.named_parameters()],
            list(zip(target.buffers(), online.buffers(), strict=True)))


@torch.no_grad()
def polyak_lists(pairs: tuple[list, list, list], tau: float) -> None:
    """polyak_update over lists made once by polyak_pairs (one fused foreach call, no module traversal)."""
    t_params, o_params, buffer_pairs = pairs
    if tau == 1.0:
        torch._foreach_copy_(t_params, o_params)
    else:
        torch._foreach_lerp_(t_params, o_params, tau)
    for t, o in buffer_pairs:
        t.copy_(o)


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy of a member-batched network, updated only by polyak_update."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target


def params_hash(params: nn.Module | dict[str, torch.Tensor], member: int | None = None) -> str:
    """A hash of (one member's) parameters, for determinism tests."""
    if isinstance(params, nn.Module):
        params = dict(params.named_parameters())
    h = hashlib.sha256()
    for name in sorted(params):
        t = params[name].detach()
        t = t if member is None else t[member]
        h.update(name.encode())
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
