"""The contract between the runner and an agent (Dopamine's split: the runner owns environments, evaluation,
checkpoints and rows; an agent only acts and learns).

Every agent of the deep runner derives from ``Agent``. The hooks that not every agent needs have no-op
defaults here, so the runner calls them unconditionally instead of probing for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class Agent:
    """M members of one algorithm. Constructed as ``Agent(cfg, obs_shape, frame_stack, action, seeds,
    total_steps, device)``: ``action`` is the number of actions of a discrete space, the gymnasium Box of a
    continuous one."""

    #: [M] bool: members whose learning diverged; they are no longer updated (see QAgent.learn)
    diverged: torch.Tensor
    #: how many members have diverged (a Python int the runner reads after every update, without tensor work)
    n_diverged: int = 0

    def make_replay(self, frame_shape, frame_dtype: torch.dtype, frame_stack: int):
        """The replay buffer this agent learns from (replay.ReplayBuffer)."""
        raise NotImplementedError

    def act(self, obs: torch.Tensor, step: int) -> np.ndarray:
        """Training actions [M, ...] for observations [M, ...], exploration included."""
        raise NotImplementedError

    def act_eval(self, obs: torch.Tensor, generators: Sequence[torch.Generator]) -> np.ndarray:
        """Evaluation actions [M, ...], drawing any randomness from ``generators`` (one per member)."""
        raise NotImplementedError

    def value_estimate(self, obs: torch.Tensor) -> torch.Tensor:
        """max_u Q(s, u) [M, B] for observations [M, B, ...] (the overestimation metrics)."""
        raise NotImplementedError

    def learn(self, replay, step: int) -> dict[str, torch.Tensor] | None:
        """The updates due after agent step ``step``; per-member metrics [M], or None when none were due."""
        raise NotImplementedError

    def observe(self, obs, action, reward, terminated, truncated, final_obs) -> None:
        """Called after every environment step (model-based agents record trajectories)."""

    def end_episodes(self, mask: np.ndarray) -> None:
        """Called with the members [M] whose episode (or life, where that ends an episode) just ended."""

    def state_dict(self) -> dict:
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError
