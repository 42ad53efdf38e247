"""Networks written for one member; members.batch_members fuses M of them into member-batched layers.

Forward code uses only operations that ignore leading dimensions (flatten the trailing ones, concatenate and
reduce on the last), so the same code runs on [B, ...] for one member and on [M, B, ...] for M members.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(inputs: int, hidden: Sequence[int], outputs: int | None, activation=nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inputs, h), activation()]
        inputs = h
    if outputs is not None:
        layers.append(nn.Linear(inputs, outputs))
    return nn.Sequential(*layers)


class NatureTorso(nn.Module):
    """Mnih et al. 2015 (Methods, 'Model architecture'): 32 8x8/4, 64 4x4/2, 64 3x3/1 convolutions, ReLU.

    Input: uint8 frames [B, 4, 84, 84], scaled to [0, 1] here so replay can keep bytes. The 512-unit
    fully connected layer belongs to the head, so the dueling streams can each have their own (Wang et al.
    2016, Sec. 4.2).
    """

    out_features = 64 * 7 * 7

    def __init__(self, in_channels: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 255.0).flatten(-3)


class MinAtarTorso(nn.Module):
    """Young & Tian 2019 (MinAtar, Sec. 4; their examples/dqn.py): one convolution of 16 3x3 filters, stride 1,
    ReLU, on the C x 10 x 10 boolean frame. The 128-unit fully connected layer belongs to the head, as in
    NatureTorso."""

    def __init__(self, in_channels: int, height: int = 10, width: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, stride=1)
        self.out_features = 16 * (height - 2) * (width - 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x.float())).flatten(-3)


class MLPTorso(nn.Module):
    """An MLP on observations whose last ``input_dims`` dimensions are one input (e.g. a stack of vectors)."""

    def __init__(self, in_features: int, hidden: Sequence[int], input_dims: int = 1):
        super().__init__()
        self.net = mlp(in_features, hidden, None)
        self.out_features = hidden[-1] if hidden else in_features
        self.input_dims = input_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return self.net(x.flatten(-self.input_dims) if self.input_dims > 1 else x)


class QNetwork(nn.Module):
    """A torso and a discrete Q-head, plain or dueling, each with one hidden layer of head_width units.

    Plain: Q = W2 relu(W1 h). Dueling (Wang et al. 2016, eq. 9): a value stream and an advantage stream of
    the same shape, Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a'). ``dueling_grad_scale`` multiplies the gradient
    entering the torso's last layer from the two streams: Wang et al. 2016 (Sec. 4.2) "rescale the combined
    gradient entering the last convolutional layer by 1/sqrt(2)"; 1 leaves it alone.
    """

    def __init__(self, torso: nn.Module, num_actions: int, head_width: int, dueling: bool = False,
                 dueling_grad_scale: float = 1.0):
        super().__init__()
        self.torso = torso
        self.dueling = dueling
        self.dueling_grad_scale = dueling_grad_scale
        width = torso.out_features
        if dueling:
            self.value = mlp(width, [head_width], 1)
            self.advantage = mlp(width, [head_width], num_actions)
        else:
            self.head = mlp(width, [head_width], num_actions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.torso(x)
        if not self.dueling:
            return self.head(h)
        if self.dueling_grad_scale != 1.0 and h.requires_grad:
            h = ScaleGrad.apply(h, self.dueling_grad_scale)
        return dueling_aggregate(self.value(h), self.advantage(h))


class ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient flowing back is multiplied by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Wang et al. 2016, eq. 9: V + (A - mean A); the mean makes V and A identifiable."""
    return value + advantage - advantage.mean(dim=-1, keepdim=True)


def make_q_network(obs_shape: Sequence[int], frame_stack: int, num_actions: int, hidden: Sequence[int],
                   dueling: bool, dueling_grad_scale: float = 1.0) -> QNetwork:
    """Pixels (2-D frames) get the Nature CNN and a 512-unit head (Mnih et al. 2015); MinAtar's C x 10 x 10
    frames get its one-convolution network and a 128-unit head (Young & Tian 2019); vectors get an MLP
    whose last hidden layer is the head's."""
    if len(obs_shape) == 2:
        return QNetwork(NatureTorso(in_channels=frame_stack), num_actions, 512, dueling, dueling_grad_scale)
    if len(obs_shape) == 3:
        if frame_stack != 1:
            raise ValueError("MinAtar frames are not stacked (Young & Tian 2019): frame_stack must be 1")
        return QNetwork(MinAtarTorso(*obs_shape), num_actions, 128, dueling, dueling_grad_scale)
    if not hidden:
        raise ValueError("hidden must list at least one layer width")
    features = int(torch.tensor(obs_shape).prod()) * frame_stack
    input_dims = len(obs_shape) + (1 if frame_stack > 1 else 0)
    return QNetwork(MLPTorso(features, hidden[:-1], input_dims), num_actions, hidden[-1], dueling,
                    dueling_grad_scale)


# ---------------------------------------------------------------------------------------------------------
# Continuous actions: a deterministic actor and a state-action critic
# ---------------------------------------------------------------------------------------------------------

# Lillicrap et al. 2016 (Sec. 7): "The final layer weights and biases of both the actor and critic were
# initialized from a uniform distribution [-3e-3, 3e-3] ... to ensure the initial outputs for the policy and
# value estimates were near zero." The other layers keep torch's default U(-1/sqrt(f), 1/sqrt(f)), f = fan-in,
# which is the initialization the paper gives for them.
FINAL_LAYER_INIT = 3e-3


def _small_final_layer(layer: nn.Linear) -> nn.Linear:
    nn.init.uniform_(layer.weight, -FINAL_LAYER_INIT, FINAL_LAYER_INIT)
    nn.init.uniform_(layer.bias, -FINAL_LAYER_INIT, FINAL_LAYER_INIT)
    return layer


def _hidden_layers(inputs: int, hidden: Sequence[int], batch_norm: bool) -> nn.Sequential:
    """Linear -> [BatchNorm] -> ReLU per width; with batch_norm the input is normalized too."""
    layers: list[nn.Module] = [nn.BatchNorm1d(inputs)] if batch_norm else []
    for width in hidden:
        layers.append(nn.Linear(inputs, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        inputs = width
    return nn.Sequential(*layers)


class DeterministicActor(nn.Module):
    """mu(x) = centre + half_range * tanh(MLP(x)): always inside the action box [low, high].

    Lillicrap et al. 2016 (Sec. 7): ReLU hidden layers, a tanh output layer to bound the actions, batch
    normalization (optional here) on the state input and every hidden layer. Inputs are [batch, obs_dim].
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], low, high, batch_norm: bool = False):
        super().__init__()
        self.torso = _hidden_layers(obs_dim, hidden, batch_norm)
        self.out = _small_final_layer(nn.Linear(hidden[-1] if hidden else obs_dim, action_dim))
        low = torch.as_tensor(low, dtype=torch.float32).reshape(action_dim)
        high = torch.as_tensor(high, dtype=torch.float32).reshape(action_dim)
        self.register_buffer("action_centre", (high + low) / 2)
        self.register_buffer("action_half_range", (high - low) / 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.action_centre + self.action_half_range * torch.tanh(self.out(self.torso(x)))


class StateActionCritic(nn.Module):
    """Q(x, u): an MLP whose layer ``action_layer`` also receives the action.

    action_layer: 0 concatenates [x, u] at the input; 1 is DDPG's critic, where "actions were not included
        until the 2nd hidden layer of Q" (Lillicrap et al. 2016, Sec. 7). Batch normalization, when on, is
        applied only to the state and the layers below the action input, as in that paper. Inputs are
        [batch, obs_dim], [batch, action_dim].
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], action_layer: int = 0,
                 batch_norm: bool = False):
        super().__init__()
        if not 0 <= action_layer < max(1, len(hidden)):
            raise ValueError(f"action_layer must index a hidden layer (0..{len(hidden) - 1}), got {action_layer}")
        self.state_layers = _hidden_layers(obs_dim, hidden[:action_layer], batch_norm)
        width = hidden[action_layer - 1] if action_layer > 0 else obs_dim
        self.joint_layers = _hidden_layers(width + action_dim, hidden[action_layer:], False)
        self.out = _small_final_layer(nn.Linear(hidden[-1] if hidden else width + action_dim, 1))

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        h = self.state_layers(x)
        return self.out(self.joint_layers(torch.cat([h, u], dim=-1))).squeeze(-1)
