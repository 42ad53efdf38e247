"""The environment side of the member axis: one object steps the M environments of a run.

Every environment family (classic control, MuJoCo, Atari, exact MDPs) is exposed through ``MemberEnv``:
member k's environment is seeded from member k's seed only, so its episodes do not depend on which other
members share the run. Episodes reset automatically; the step that ends an episode reports the final
observation separately so that truncated episodes can bootstrap from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch


@dataclass
class Step:
    """What one lockstep step of M environments returns (arrays with the member dimension first).

    obs: the observation to act on next (already the first observation of a new episode where one ended).
    reward: the raw environment reward (clipping, if any, is the learner's business).
    terminated: the learning signal says "no bootstrap" (true termination, or a life loss under the Atari
        ``nature`` protocol in training).
    truncated: the episode was cut by a time limit; the learner bootstraps from ``final_obs``.
    final_obs: for members whose episode ended, the last observation of that episode; else equal to obs.
    finished: (member, return, length) for every *game* episode that ended on this step, where return is
        the undiscounted sum of raw rewards and length is in agent steps.
    life_lost: where a life was lost on this step under a protocol whose learner treats that as the end of
        its episode (Atari ``nature``), also in evaluation, where ``terminated`` ignores it; None = never.
        The runner uses it to compute true values under the episodes the Q-function learns.
    """

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray
    finished: list[tuple[int, float, int]] = field(default_factory=list)
    life_lost: np.ndarray | None = None

    @property
    def episode_end(self) -> np.ndarray:
        return self.terminated | self.truncated


class MemberEnv:
    """Interface: M environments stepped in lockstep.

    Attributes every implementation sets:
      num_members, observation_space and action_space (for ONE member; for pixel envs this is a single
      preprocessed frame), frame_stack (how many consecutive frames make the agent's input; 1 for state
      vectors), protocol (a short name recorded with every metric row, e.g. "nature", "machado", "gym-v5"),
      frames_per_step (emulator frames per agent step: 4 for Atari, 1 elsewhere).
    """

    num_members: int
    observation_space: gym.Space
    action_space: gym.Space
    frame_stack: int = 1
    protocol: str = "default"
    frames_per_step: int = 1

    def reset(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, actions: np.ndarray) -> Step:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def state_dict(self) -> dict:
        """Everything needed to continue the current episodes after a restart (tensors and plain values only,
        so checkpoints load with torch.load(weights_only=True)). Raise NotImplementedError if impossible."""
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:
        raise NotImplementedError


def _plain(value):
    """A weights_only-safe copy of a simulator attribute (numpy arrays become tensors)."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _unplain(value, like):
    if isinstance(like, np.ndarray):
        return value.numpy().copy()
    if isinstance(like, tuple | list):
        return type(like)(_unplain(v, w) for v, w in zip(value, like, strict=True))
    return value


def _simulator_state(env: gym.Env) -> dict:
    """Generic state of a gymnasium environment: RNG, time-limit counter, and the simulator's state.

    MuJoCo tasks are restored from qpos/qvel/act/time; other environments (classic control) from their
    array- and number-valued attributes.
    """
    u = env.unwrapped
    state: dict = {"rng": u.np_random.bit_generator.state, "wrappers": {}}
    w = env
    while isinstance(w, gym.Wrapper):
        if hasattr(w, "_elapsed_steps"):
            state["wrappers"][type(w).__name__] = w._elapsed_steps
        w = w.env
    if hasattr(u, "data") and hasattr(u.data, "qpos"):
        d = u.data
        state["mujoco"] = {k: torch.from_numpy(np.array(getattr(d, k), copy=True)) for k in ("qpos", "qvel", "act")}
        state["mujoco"]["time"] = float(d.time)
    else:
        state["attrs"] = {k: _plain(v) for k, v in vars(u).items()
                          if isinstance(v, np.ndarray | int | float | bool | type(None))
                          or (isinstance(v, tuple | list) and all(isinstance(x, int | float) for x in v))}
    return state


def _load_simulator_state(env: gym.Env, state: dict) -> None:
    u = env.unwrapped
    u.np_random.bit_generator.state = state["rng"]
    w = env
    while isinstance(w, gym.Wrapper):
        if type(w).__name__ in state["wrappers"]:
            w._elapsed_steps = state["wrappers"][type(w).__name__]
        w = w.env
    if "mujoco" in state:
        m = state["mujoco"]
        u.set_state(m["qpos"].numpy(), m["qvel"].numpy())
        u.data.act[:] = m["act"].numpy()
        u.data.time = m["time"]
    else:
        for k, v in state["attrs"].items():
            setattr(u, k, _unplain(v, getattr(u, k)))


class GymMemberEnv(MemberEnv):
    """M separate gymnasium environments with manual autoreset and per-member seeds.

    Member k's environment is reset with seed ``seeds[k]`` at its first episode and continues its own
    random stream afterwards, exactly as a single-seed run would.
    """

    def __init__(self, make, seeds, protocol: str = "gym"):
        self.envs = [make() for _ in seeds]
        self.seeds = [int(s) for s in seeds]
        self.num_members = len(seeds)
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.protocol = protocol
        self._returns = np.zeros(self.num_members)
        self._lengths = np.zeros(self.num_members, dtype=np.int64)
        for env, s in zip(self.envs, self.seeds, strict=True):
            env.action_space.seed(s)

    def reset(self) -> np.ndarray:
        obs = [env.reset(seed=s)[0] for env, s in zip(self.envs, self.seeds, strict=True)]
        self._returns[:] = 0
        self._lengths[:] = 0
        return np.stack(obs)

    def step(self, actions: np.ndarray) -> Step:
        obs, rew, term, trunc, final, finished = [], [], [], [], [], []
        for k, (env, a) in enumerate(zip(self.envs, actions, strict=True)):
            o, r, te, tr, _ = env.step(a)
            self._returns[k] += r
            self._lengths[k] += 1
            final.append(o)
            if te or tr:
                finished.append((k, float(self._returns[k]), int(self._lengths[k])))
                self._returns[k] = 0
                self._lengths[k] = 0
                o, _ = env.reset()
            obs.append(o)
            rew.append(r)
            term.append(te)
            trunc.append(tr)
        return Step(np.stack(obs), np.asarray(rew, dtype=np.float32), np.asarray(term, dtype=bool),
                    np.asarray(trunc, dtype=bool), np.stack(final), finished)

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def state_dict(self) -> dict:
        return {"envs": [_simulator_state(e) for e in self.envs], "returns": torch.from_numpy(self._returns.copy()),
                "lengths": torch.from_numpy(self._lengths.copy())}

    def load_state_dict(self, state: dict) -> None:
        for env, s in zip(self.envs, state["envs"], strict=True):
            _load_simulator_state(env, s)
        self._returns[:] = state["returns"].numpy()
        self._lengths[:] = state["lengths"].numpy()
