"""MinAtar (Young & Tian 2019, arXiv:1903.03176): five Atari-like games on a 10x10 grid, in pure Python.

Ids are the ones the ``minatar`` package registers with gymnasium, ``MinAtar/<Game>-v0`` and ``-v1``; the
version only names the action set (``minatar/gym.py``): v0 exposes all 6 actions (no-op, left, up, right, down,
fire) in every game, v1 the game's minimal set (e.g. Breakout: no-op, left, right). Young & Tian's results and
the results in the MinAtar README use the full set (README: "the results included in this repo and the
associated paper use the full action set of 6 actions"), so compare with them on v0 ids.

Each member is one ``minatar.Environment`` (the object the paper's ``examples/dqn.py`` trains on, built here
with every setting passed explicitly, never the package defaults), seeded with ``seed(seeds[k])`` before its
first game. The package draws the sticky-action coin and the game's own randomness from one
``numpy.random.RandomState``, so member k's games depend on ``seeds[k]`` and its own actions only.

Protocol ``minatar`` (Young & Tian 2019, Section 2, and the package's ``Environment`` defaults):
- sticky actions with probability 0.1: on each step, with probability 0.1 the previous *applied* action is
  repeated instead of the agent's; the previous action carries over from one game to the next, as in the package;
- difficulty ramping on (Asterix, Seaquest, Space Invaders speed up over a game; Breakout and Freeway ignore it);
- one game frame per agent step (``frames_per_step`` 1) and no frame stacking: the paper's DQN acts on the
  current frame alone (``examples/dqn.py``), as does Revisiting Rainbow (``stack_size = 1`` in its gin configs);
- no episode cap: neither ``examples/dqn.py`` nor Revisiting Rainbow (``Runner.max_steps_per_episode =
  100000000``) cuts games; Freeway ends itself after 2,500 frames. ``truncated`` is therefore always false;
- train and eval play the same games (the paper reports returns of training episodes; no separate protocol).

Observations are the game's 10x10xC boolean frame, emitted channel-first as [C, 10, 10] uint8 (0/1), the layout
``examples/dqn.py`` feeds its network (``get_state`` permutes to channels first). C is 4 (Asterix, Breakout),
7 (Freeway), 10 (Seaquest) or 6 (Space Invaders).

The games are plain Python objects, so ``state_dict`` pickles them (game objects and their shared random state
together) into a uint8 tensor: a resumed run continues the very same games, unlike ALE.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from importlib.metadata import version

import gymnasium as gym
import numpy as np
import torch
from minatar import Environment

from envs.base import MemberEnv, Step

# gymnasium id game name -> minatar module name (the table minatar.gym.register_envs builds)
GAMES = {"Asterix": "asterix", "Breakout": "breakout", "Freeway": "freeway", "Seaquest": "seaquest",
         "SpaceInvaders": "space_invaders"}
# minatar/gym.py: v0 registers use_minimal_action_set=False, v1 use_minimal_action_set=True
ACTION_SETS = {"v0": "full", "v1": "minimal"}
ENV_IDS = tuple(f"MinAtar/{game}-{version}" for game in GAMES for version in ACTION_SETS)

PROTOCOLS: dict[str, dict] = {
    "minatar": {
        "sticky_action_prob": 0.1,  # Young & Tian 2019, Section 2; minatar.Environment's default
        "difficulty_ramping": True,  # Young & Tian 2019, Section 2; minatar.Environment's default
        "max_episode_steps": None,  # examples/dqn.py plays every game to its end (see the module docstring)
    },
}

# numpy.random.RandomState accepts seeds in [0, 2**32)
_MAX_SEED = 2**32


def _env_error(message: str) -> Exception:
    from envs.registry import EnvError  # the registry imports this module lazily; keep the dependency one-way

    return EnvError(message)


def parse_id(env_id: str) -> tuple[str, str]:
    """(minatar module name, action set) for a MinAtar id; EnvError naming the valid ids otherwise."""
    if env_id not in ENV_IDS:
        raise _env_error(f"unknown MinAtar env {env_id!r}; valid: {', '.join(ENV_IDS)}")
    game, version = env_id.removeprefix("MinAtar/").rsplit("-", 1)
    return GAMES[game], ACTION_SETS[version]


def _frame(game: Environment) -> np.ndarray:
    """[10, 10, C] bool -> [C, 10, 10] uint8."""
    return np.ascontiguousarray(game.state().transpose(2, 0, 1), dtype=np.uint8)


class MinAtarMemberEnv(MemberEnv):
    """M MinAtar games in lockstep, one per member, emitting frames [M, C, 10, 10] uint8.

    ``terminated`` is the game's own end; ``truncated`` never happens (no cap). ``finished`` lists every game
    that ended on the step with its raw return and its length in agent steps (= frames). ``settings`` records
    everything passed to minatar and the action set in game action indices.
    """

    frame_stack = 1
    frames_per_step = 1

    def __init__(self, env_id: str, seeds: Sequence[int], protocol: str = "minatar", mode: str = "train"):
        if protocol not in PROTOCOLS:
            raise _env_error(f"unknown MinAtar protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if mode not in ("train", "eval"):
            raise _env_error(f"unknown env mode {mode!r}; valid: train, eval")
        self.seeds = [int(s) for s in seeds]
        if not all(0 <= s < _MAX_SEED for s in self.seeds):
            raise ValueError(f"MinAtar seeds must lie in [0, {_MAX_SEED}); got {self.seeds}")
        name, action_set = parse_id(env_id)
        self.env_id = env_id
        self.num_members = len(self.seeds)
        self.protocol = protocol
        p = PROTOCOLS[protocol]
        self.games = [Environment(name, sticky_action_prob=p["sticky_action_prob"],
                                  difficulty_ramping=p["difficulty_ramping"]) for _ in self.seeds]
        g = self.games[0]
        self.action_set = list(range(g.num_actions())) if action_set == "full" else list(g.minimal_action_set())
        channels = g.state_shape()[2]
        self.settings = {"env_id": env_id, "game": name, "minatar": version("minatar"), "protocol": protocol,
                         "mode": mode, **p, "action_set": action_set, "game_actions": list(self.action_set),
                         "frame_shape": [channels, 10, 10],
                         "frame_stack": self.frame_stack, "frames_per_step": self.frames_per_step}
        self.observation_space = gym.spaces.Box(0, 1, (channels, 10, 10), np.uint8)
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self._returns = np.zeros(self.num_members)
        self._lengths = np.zeros(self.num_members, dtype=np.int64)

    def reset(self) -> np.ndarray:
        """Reseed every member from its seed and start new games."""
        for game, s in zip(self.games, self.seeds, strict=True):
            game.seed(s)
            game.last_action = 0  # a fresh Environment's value, so a reset env matches a newly built one
            game.reset()
        self._returns[:] = 0
        self._lengths[:] = 0
        return np.stack([_frame(g) for g in self.games])

    def step(self, actions: np.ndarray) -> Step:
        M = self.num_members
        reward = np.zeros(M, dtype=np.float32)
        terminated = np.zeros(M, dtype=bool)
        final_obs, obs, finished = [], [], []
        for k, (game, a) in enumerate(zip(self.games, np.asarray(actions), strict=True)):
            r, done = game.act(self.action_set[int(a)])
            reward[k], terminated[k] = r, done
            self._returns[k] += r
            self._lengths[k] += 1
            final_obs.append(_frame(game))
            if done:
                finished.append((k, float(self._returns[k]), int(self._lengths[k])))
                self._returns[k] = 0
                self._lengths[k] = 0
                game.reset()  # keeps the member's random stream: the next game continues it
                obs.append(_frame(game))
            else:
                obs.append(final_obs[-1])
        return Step(np.stack(obs), reward, terminated, np.zeros(M, dtype=bool), np.stack(final_obs), finished)

    def state_dict(self) -> dict:
        """The games (with their random state) as pickled bytes in a uint8 tensor, and the episode counters."""
        blob = pickle.dumps(self.games, protocol=pickle.HIGHEST_PROTOCOL)
        return {"env_id": self.env_id, "protocol": self.protocol, "seeds": list(self.seeds),
                "games": torch.frombuffer(bytearray(blob), dtype=torch.uint8),
                "returns": torch.from_numpy(self._returns.copy()), "lengths": torch.from_numpy(self._lengths.copy())}

    def load_state_dict(self, state: dict) -> None:
        saved = (state["env_id"], state["protocol"], list(state["seeds"]))
        if saved != (self.env_id, self.protocol, self.seeds):
            here = (self.env_id, self.protocol, self.seeds)
            raise ValueError(f"MinAtar state of (env, protocol, seeds) {saved} cannot be loaded into {here}")
        # The bytes are this project's own checkpoint (written by state_dict above), not outside input.
        self.games = pickle.loads(state["games"].numpy().tobytes())
        self._returns[:] = state["returns"].numpy()
        self._lengths[:] = state["lengths"].numpy()


def make_minatar(env_id: str, seeds: Sequence[int], protocol: str = "minatar",
                 mode: str = "train") -> MinAtarMemberEnv:
    """The registry's entry point: M members of ``MinAtar/<Game>-v0|v1`` under protocol ``minatar``."""
    return MinAtarMemberEnv(env_id, seeds, protocol, mode)
