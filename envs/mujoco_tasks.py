"""Gymnasium MuJoCo v5 tasks and their fixed-horizon variants.

A ``-fixedH`` id runs the same task with early termination switched off, so every episode has the same
length; time-indexed models (the time-varying linear dynamics of Gu et al. 2016) need that.
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym

from envs.base import GymMemberEnv

_BASE = ("InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5", "Pusher-v5", "HalfCheetah-v5",
         "Swimmer-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
# Tasks whose v5 constructor accepts terminate_when_unhealthy; the others never terminate early.
_HEALTH_TERMINATED = ("Hopper-v5", "Walker2d-v5", "Ant-v5")

TASKS: dict[str, dict] = {name: {"id": name, "kwargs": {}} for name in _BASE}
for _name in _BASE:
    _fixed = _name.replace("-v5", "-fixedH-v5")
    _kw = {"terminate_when_unhealthy": False} if _name in _HEALTH_TERMINATED else {}
    TASKS[_fixed] = {"id": _name, "kwargs": _kw, "fixed_horizon": True}


def make_mujoco(env_id: str, seeds: Sequence[int]) -> GymMemberEnv:
    spec = TASKS[env_id]
    protocol = "gym-v5-fixedH" if spec.get("fixed_horizon") else "gym-v5"
    return GymMemberEnv(lambda: gym.make(spec["id"], **spec["kwargs"]), seeds, protocol=protocol)
