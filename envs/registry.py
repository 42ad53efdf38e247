"""Environment ids -> one construction path for M members.

``make_env(env_id, seeds, mode)`` is the only way the runner builds environments. An id names a family:
- ``ALE/<Game>-v5``: Atari through ale-py, protocol ``nature`` or ``machado`` (DESIGN.md, Protocols)
- gymnasium classic control (``CartPole-v1``, ``Acrobot-v1``, ``MountainCar-v0``, ``Pendulum-v1``)
- gymnasium MuJoCo v5 tasks (continuous actions)
- ``MinAtar/<Game>-v0|v1``: MinAtar (Young & Tian 2019), protocol ``minatar`` (envs/minatar.py)
- ``toy/...``: small exact MDPs whose optimal Q is known by value iteration
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym

from envs.base import GymMemberEnv, MemberEnv

CLASSIC_CONTROL = ("CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1", "MountainCarContinuous-v0")
ATARI_PROTOCOLS = ("nature", "machado")


class EnvError(ValueError):
    """An environment id or setting that does not exist; the message names the valid choices."""


def env_family(env_id: str) -> str:
    if env_id.startswith("ALE/"):
        return "atari"
    if env_id.startswith("toy/"):
        return "toy"
    if env_id.startswith("MinAtar/"):
        from envs.minatar import parse_id

        parse_id(env_id)  # an unknown game or version is named here, before anything is built
        return "minatar"
    if env_id in CLASSIC_CONTROL:
        return "classic"
    from envs import mujoco_tasks

    if env_id in mujoco_tasks.TASKS:
        return "mujoco"
    raise EnvError(f"unknown env {env_id!r}; valid: {', '.join(known_envs())}")


def known_envs() -> list[str]:
    """Every id the registry accepts (Atari: any game ale-py ships, shown here as ALE/<Game>-v5)."""
    from envs import minatar, mujoco_tasks, toy

    return ["ALE/<Game>-v5", *minatar.ENV_IDS, *CLASSIC_CONTROL, *mujoco_tasks.TASKS, *toy.TOY_ENVS]


def action_kind(env_id: str) -> str:
    """discrete or continuous, known from the id alone (no environment is built)."""
    family = env_family(env_id)
    if family == "mujoco" or env_id in ("Pendulum-v1", "MountainCarContinuous-v0"):
        return "continuous"
    return "discrete"


def fixed_horizon_envs() -> list[str]:
    """Ids whose episodes all last exactly the time limit: the -fixedH MuJoCo tasks, and Pendulum-v1, which
    never terminates (its 200-step limit ends every episode)."""
    from envs import mujoco_tasks

    return ["Pendulum-v1", *(name for name, spec in mujoco_tasks.TASKS.items() if spec.get("fixed_horizon"))]


def default_protocol(env_id: str) -> str:
    family = env_family(env_id)
    if family == "mujoco" and env_id in fixed_horizon_envs():
        return "gym-v5-fixedH"  # the protocol column tells fixed-horizon rows from early-terminating ones
    return {"atari": "nature", "minatar": "minatar", "classic": "gym", "mujoco": "gym-v5", "toy": "exact"}[family]


def make_env(env_id: str, seeds: Sequence[int], mode: str = "train", protocol: str | None = None) -> MemberEnv:
    """Build the M environments of a run (mode "train" or "eval"; eval differs only where a protocol says)."""
    if mode not in ("train", "eval"):
        raise EnvError(f"unknown env mode {mode!r}; valid: train, eval")
    family = env_family(env_id)
    protocol = protocol or default_protocol(env_id)
    if family == "atari":
        if protocol not in ATARI_PROTOCOLS:
            raise EnvError(f"unknown Atari protocol {protocol!r}; valid: {', '.join(ATARI_PROTOCOLS)}")
        from envs.atari import make_atari

        return make_atari(env_id, seeds, protocol=protocol, mode=mode)
    if family == "minatar":
        from envs.minatar import make_minatar

        return make_minatar(env_id, seeds, protocol=protocol, mode=mode)
    if family == "toy":
        from envs.toy import make_toy

        return make_toy(env_id, seeds)
    if family == "mujoco":
        from envs import mujoco_tasks

        return mujoco_tasks.make_mujoco(env_id, seeds, protocol)
    return GymMemberEnv(lambda: gym.make(env_id), seeds, protocol=protocol)
