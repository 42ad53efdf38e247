"""Gymnasium MuJoCo v5 tasks and their fixed-horizon variants.

A ``-fixedH`` id runs the same task with early termination switched off, so every episode lasts exactly the
task's time limit; time-indexed models (the time-varying linear dynamics of Gu et al. 2016) need that.
Hopper, Walker2d and Ant switch it off through their own ``terminate_when_unhealthy=False``. The inverted
pendulums have no such switch: there ``IgnoreTermination`` keeps the episode going after the pole falls.
Their rewards already say what happened: InvertedPendulum pays 1 per step only while the pole is up (so the
return counts balanced steps); InvertedDoublePendulum's alive bonus stops while its penalties go on.

Gu et al. 2016 (Table 1) used their own MuJoCo models, so their domains map to these tasks only roughly:

    Gu et al. 2016   gymnasium v5 task          caveats
    Cartpole         InvertedPendulum-v5        balancing from upright, not the paper's swing-up; reward 1 per
                                                balanced step; episodes end when the pole falls (-fixedH: not)
    Reacher          Reacher-v5                 a 2-DOF arm, not 3-DOF; random targets as in the paper;
                                                50-step episodes; reward -distance - control cost
    Peg              none                       no peg-insertion task in gymnasium
    Gripper          Pusher-v5 (closest)        pushes an object with a 7-DOF arm: no grasping; 100 steps
    GripperM         Pusher-v5 (closest)        as Gripper, and no moveable platform
    Canada2d         none                       no hockey-stick ball-hitting task in gymnasium
    Cheetah          HalfCheetah-v5             same body plan; forward velocity - control, 1,000 steps
    Swimmer6         Swimmer-v5                 2 joints, not 6; forward-velocity reward, no target
    Ant              Ant-v5                     forward-velocity reward and healthy bonus, no fixed target
    Walker2d         Walker2d-v5                same task; healthy bonus, 1,000-step episodes

Everywhere the reward scales and horizons differ from the paper's (its Table 1 reports rewards on its own
scales, e.g. Cheetah 7.91 for NAF), so a published number beside ours is context, never a target
(analysis/reference.py).
InvertedDoublePendulum-v5 has no counterpart in the paper.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import gymnasium as gym

from envs.base import GymMemberEnv

_BASE = ("InvertedPendulum-v5", "InvertedDoublePendulum-v5", "Reacher-v5", "Pusher-v5", "HalfCheetah-v5",
         "Swimmer-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
# Tasks whose v5 constructor accepts terminate_when_unhealthy; the others never terminate early, except the
# inverted pendulums (see IgnoreTermination).
_HEALTH_TERMINATED = ("Hopper-v5", "Walker2d-v5", "Ant-v5")

TASKS: dict[str, dict] = {name: {"id": name, "kwargs": {}} for name in _BASE}
for _name in _BASE:
    _fixed = _name.replace("-v5", "-fixedH-v5")
    _kw = {"terminate_when_unhealthy": False} if _name in _HEALTH_TERMINATED else {}
    TASKS[_fixed] = {"id": _name, "kwargs": _kw, "fixed_horizon": True}


class IgnoreTermination(gym.Wrapper):
    """Report every step as non-terminal, so only the time limit ends an episode (a fixed horizon).

    Wraps the time-limited environment: truncation at the limit passes through unchanged. ``info`` keeps
    the task's own verdict as ``"task_terminated"``.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, False, truncated, {**info, "task_terminated": terminated}


# gymnasium 1.x's v5 model files still carry <compiler settotalmass=...>, so MuJoCo >= 3.3 prints this deprecation
# once per model compiled (one per member and per evaluation), burying a run's own output.
SETTOTALMASS_WARNING = "compiler attribute 'settotalmass' is deprecated"


def _forward_other_warnings(message: str) -> None:
    if SETTOTALMASS_WARNING in message:
        return
    sys.stderr.write(f"WARNING: {message}\n")  # what MuJoCo prints without a handler
    sys.stderr.flush()


def quiet_settotalmass_warning() -> None:
    """Route MuJoCo's warnings through a handler that drops exactly the settotalmass deprecation (the setting
    still applies: gymnasium's masses are what the tasks are defined with) and prints every other warning."""
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_forward_other_warnings)


def make_task(env_id: str) -> gym.Env:
    spec = TASKS[env_id]
    quiet_settotalmass_warning()
    env = gym.make(spec["id"], **spec["kwargs"])
    return IgnoreTermination(env) if spec.get("fixed_horizon") else env


def make_mujoco(env_id: str, seeds: Sequence[int], protocol: str) -> GymMemberEnv:
    return GymMemberEnv(lambda: make_task(env_id), seeds, protocol=protocol)
