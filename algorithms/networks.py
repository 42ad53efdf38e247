"""Networks written for one member (the member axis stacks them; see members.py)."""

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
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float() / 255.0)


class MLPTorso(nn.Module):
    def __init__(self, in_features: int, hidden: Sequence[int]):
        super().__init__()
        self.net = mlp(in_features, hidden, None)
        self.out_features = hidden[-1] if hidden else in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float().flatten(1))


class QNetwork(nn.Module):
    """A torso and a discrete Q-head, plain or dueling, each with one hidden layer of head_width units.

    Plain: Q = W2 relu(W1 h). Dueling (Wang et al. 2016, eq. 9): a value stream and an advantage stream of
    the same shape, Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').
    """

    def __init__(self, torso: nn.Module, num_actions: int, head_width: int, dueling: bool = False):
        super().__init__()
        self.torso = torso
        self.dueling = dueling
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
        return dueling_aggregate(self.value(h), self.advantage(h))


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Wang et al. 2016, eq. 9: V + (A - mean A); the mean makes V and A identifiable."""
    return value + advantage - advantage.mean(dim=-1, keepdim=True)


def make_q_network(obs_shape: Sequence[int], frame_stack: int, num_actions: int, hidden: Sequence[int],
                   dueling: bool) -> QNetwork:
    """Pixels (2-D frames) get the Nature CNN and a 512-unit head (Mnih et al. 2015); vectors get an MLP
    whose last hidden layer is the head's."""
    if len(obs_shape) == 2:
        return QNetwork(NatureTorso(in_channels=frame_stack), num_actions, 512, dueling)
    if not hidden:
        raise ValueError("hidden must list at least one layer width")
    features = int(torch.tensor(obs_shape).prod()) * frame_stack
    return QNetwork(MLPTorso(features, hidden[:-1]), num_actions, hidden[-1], dueling)
