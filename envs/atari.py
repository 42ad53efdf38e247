"""Atari through ale-py's native vector environment, under the ``nature`` or ``machado`` protocol.

One ``ale_py.vector_env.AtariVectorEnv`` runs the M members: each sub-environment owns its own emulator and
random streams, and ``reset(seed=array)`` seeds each one separately, so member k's episodes depend on
``seeds[k]`` and its own actions only. The env emits single 84x84 grey frames; the agent and replay stack
``frame_stack`` of them, so replay stores each frame once.

Protocols (DESIGN.md, Protocols):

- ``nature`` (Mnih et al. 2015, Methods and Extended Data Table 1): deterministic emulator (no sticky actions),
  up to 30 no-op starts, 4-frame skip with a max over the last 2 frames, 84x84 grey, and in training a lost
  life ends the learning episode while the game goes on.
- ``machado`` (Machado et al. 2018, "Revisiting the Arcade Learning Environment"): sticky actions with
  probability 0.25 as the source of stochasticity (they propose them instead of no-op starts, so there are
  none), and episodes end at game over only: no life-loss signal.

Action sets: nature uses the game's minimal set, machado the full 18 actions (their recommendation).
Both: no fire-on-reset (neither paper presses FIRE for the agent, and neither
does Dopamine's Atari preprocessing), raw rewards (the learner clips), and a cap of 108,000 emulator frames per
game in training (27,000 agent steps, Dopamine's cap) after which the game is truncated; evaluation episodes
are capped per protocol (EVAL_EPISODE_FRAMES: nature 18,000 frames, machado 108,000). ale-py draws the no-op start as
0 to noop_max - 1 emulator frames (not agent steps, the same granularity as gymnasium's AtariPreprocessing and
the Baselines NoopResetEnv); those frames do not count towards the cap.

What ale-py does not do for us, and why:

- Life loss is read from the ``lives`` counter here rather than from ale-py's ``life_loss_info`` flag. That
  flag reports a life loss as ``terminated``, which is then indistinguishable from game over; keeping ale-py
  at game-over-only termination tells the two apart, and train and eval share one emulator configuration.
- The frame cap is counted here. ale-py's own cap stops the frame-skip loop one frame before it captures the
  step's last frame, so the final observation of a truncated game (the one the learner bootstraps from) would
  be a max of the previous step's and this step's frames; ale-py's cap is therefore set out of reach and a
  capped game is reset here with a partial reset that keeps each member's random streams.
- At game over ale-py stops the frame-skip loop the same way, so ``final_obs`` of a finished game is a stale
  frame; that is harmless because a terminated transition is not bootstrapped.
- ``state_dict`` is not available: ale-py's vector interface exposes no emulator cloning, so a resumed run
  restarts its environments from fresh seeds (MemberEnv's NotImplementedError, which the runner handles).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence

import ale_py
import gymnasium as gym
import numpy as np
from ale_py import roms
from ale_py.registration import rom_id_to_name
from ale_py.vector_env import AtariVectorEnv

from envs.base import MemberEnv, Step

FRAME_SHAPE = (84, 84)  # Mnih et al. 2015, Methods "Preprocessing"
FRAME_STACK = 4  # Mnih et al. 2015, Extended Data Table 1 "agent history length"
FRAMES_PER_STEP = 4  # emulator frames per agent step; Mnih et al. 2015, Extended Data Table 1 "action repeat"
MAX_EPISODE_FRAMES = 108_000  # emulator frames (30 min at 60 Hz) = 27,000 agent steps; Dopamine's cap
# Evaluation episode cap per protocol, in emulator frames: Mnih et al. 2015 (Methods, "Evaluation procedure")
# and van Hasselt et al. 2016 play "up to 5 min" (18,000 frames = 4,500 agent steps); Machado et al. 2018
# (Sec. 5.1) cap every episode at 108,000 frames (30 min), in evaluation as in training.
EVAL_EPISODE_FRAMES = {"nature": 18_000, "machado": 108_000}
# ale-py's own frame cap, set beyond any game so only ours applies (see the module docstring).
_NATIVE_FRAME_CAP = 2**31 - 1
# ALE seeds are C ints, and ale-py ignores a negative seed, leaving the seed it drew from the OS.
_MAX_SEED = 2**31 - 1

PROTOCOLS: dict[str, dict] = {
    "nature": {
        "repeat_action_probability": 0.0,  # Mnih et al. 2015: deterministic ALE
        "noop_max": 30,  # Mnih et al. 2015, Extended Data Table 1 "no-op max"
        "full_action_space": False,  # Mnih et al. 2015 and Dopamine: the game's minimal action set
    },
    "machado": {
        "repeat_action_probability": 0.25,  # Machado et al. 2018: sticky actions, zeta = 0.25
        "noop_max": 0,  # Machado et al. 2018 use sticky actions instead of no-op starts
        "full_action_space": True,  # Machado et al. 2018 recommend all 18 actions, whatever the game uses
    },
}

_ENV_ID = re.compile(r"ALE/(?P<game>\w+)-v5")


def _env_error(message: str) -> Exception:
    from envs.registry import EnvError  # the registry imports this module lazily; keep the dependency one-way

    return EnvError(message)


def rom_id(env_id: str) -> str:
    """ale-py's ROM id (snake_case) for ``ALE/<Game>-v5``; EnvError naming how to list games if unknown."""
    match = _ENV_ID.fullmatch(env_id)
    if match is None:
        raise _env_error(f"Atari ids look like ALE/<Game>-v5 (e.g. ALE/Pong-v5), got {env_id!r}")
    by_name = {rom_id_to_name(r): r for r in roms.get_all_rom_ids()}
    game = match["game"]
    if game not in by_name:
        close = difflib.get_close_matches(game, by_name, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise _env_error(f"unknown Atari game {game!r}{hint}; list the games ale-py ships with "
                         "python -c \"import ale_py.roms; print(ale_py.roms.get_all_rom_ids())\" "
                         "(snake_case ids; the env id uses CamelCase, e.g. ms_pacman -> ALE/MsPacman-v5)")
    return by_name[game]


class AtariMemberEnv(MemberEnv):
    """M Atari games in lockstep, one per member, emitting single preprocessed frames [M, 84, 84] uint8.

    ``terminated`` is game over, and under ``nature`` in training also a lost life: that step reports the
    frame after the loss as both ``final_obs`` and ``obs``, because the game is not reset. ``truncated`` is
    the frame cap (both can be true on one step). ``finished`` lists games only: return is the sum of raw
    rewards over all lives, length is in agent steps. ``settings`` records everything passed to ale-py.
    """

    frame_stack = FRAME_STACK
    frames_per_step = FRAMES_PER_STEP

    def __init__(self, env_id: str, seeds: Sequence[int], protocol: str, mode: str,
                 max_episode_frames: int | None = None):
        if protocol not in PROTOCOLS:
            raise _env_error(f"unknown Atari protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if mode not in ("train", "eval"):
            raise _env_error(f"unknown env mode {mode!r}; valid: train, eval")
        self.seeds = [int(s) for s in seeds]
        if not all(0 <= s < _MAX_SEED for s in self.seeds):
            raise ValueError(f"Atari seeds must lie in [0, {_MAX_SEED}) (use experiments.runner.env_seed); "
                             f"got {self.seeds}")
        self.num_members = len(self.seeds)
        self.protocol = protocol
        if max_episode_frames is None:
            max_episode_frames = MAX_EPISODE_FRAMES if mode == "train" else EVAL_EPISODE_FRAMES[protocol]
        self.max_episode_frames = int(max_episode_frames)
        # Mnih et al. 2015: "the number of lives left ... is then used to mark the end of an episode during
        # training"; their evaluation, and Machado et al. 2018 throughout, end episodes at game over only.
        self.life_loss_ends_episode = protocol == "nature" and mode == "train"
        native = {
            **PROTOCOLS[protocol],
            "max_num_frames_per_episode": _NATIVE_FRAME_CAP,
            "continuous": False,
            "img_height": FRAME_SHAPE[0],
            "img_width": FRAME_SHAPE[1],
            "grayscale": True,
            "stack_num": 1,  # the agent stacks frames; see the module docstring
            "frameskip": FRAMES_PER_STEP,
            "maxpool": True,  # Mnih et al. 2015: max over the last two frames removes sprite flicker
            "episodic_life": False,  # would restart the game at a life loss; in Nature DQN the game goes on
            "life_loss_info": False,  # life loss is tracked here from `lives`
            "reward_clipping": False,  # Step.reward is raw; the learner clips
            "use_fire_reset": False,
            "autoreset_mode": "SameStep",  # the step that ends a game also returns the next game's first frame
            "batch_size": 0,  # synchronous: results come back ordered by member
            # One thread per member up to the cores this process may use; members are independent, so
            # thread scheduling cannot change any member's trajectory.
            "num_threads": min(self.num_members, len(os.sched_getaffinity(0))),
            "thread_affinity_offset": -1,
        }
        game = rom_id(env_id)
        self._vec = AtariVectorEnv(game, self.num_members, **native)
        self.settings = {"env_id": env_id, "rom": game, "ale_py": ale_py.__version__, "protocol": protocol,
                         "mode": mode, "life_loss_ends_episode": self.life_loss_ends_episode,
                         "max_episode_frames": self.max_episode_frames,
                         "eval_max_episode_frames": EVAL_EPISODE_FRAMES[protocol], **native}
        self.observation_space = gym.spaces.Box(0, 255, FRAME_SHAPE, np.uint8)
        self.action_space = gym.spaces.Discrete(int(self._vec.single_action_space.n))
        self._returns = np.zeros(self.num_members)
        self._lengths = np.zeros(self.num_members, dtype=np.int64)
        self._lives = np.zeros(self.num_members, dtype=np.int64)

    def reset(self) -> np.ndarray:
        """Reseed every member from its seed and start new games."""
        obs, info = self._vec.reset(seed=np.asarray(self.seeds, dtype=np.int64))
        self._returns[:] = 0
        self._lengths[:] = 0
        self._lives[:] = info["lives"]
        return obs[:, 0]

    def step(self, actions: np.ndarray) -> Step:
        obs, reward, game_over, _, info = self._vec.step(np.asarray(actions, dtype=np.int64))
        obs, reward = obs[:, 0], reward.astype(np.float32)
        final_obs = np.where(game_over[:, None, None], info["final_obs"][:, 0], obs) if game_over.any() else obs
        self._returns += reward
        self._lengths += 1
        truncated = ~game_over & (self._lengths * FRAMES_PER_STEP >= self.max_episode_frames)
        # A lost life is a drop in `lives` within the same game (after game over, `lives` is the new game's).
        life_lost = ~game_over & (info["lives"] < self._lives)
        self._lives[:] = info["lives"]
        terminated = game_over | (life_lost & self.life_loss_ends_episode)
        if truncated.any():
            # ale-py's default seed (None) restarts a game without reseeding, so each member keeps its streams.
            reset_obs, reset_info = self._vec.reset(options={"reset_mask": truncated})
            obs = np.where(truncated[:, None, None], reset_obs[:, 0], obs)
            self._lives[truncated] = reset_info["lives"][truncated]
        game_end = game_over | truncated
        finished = [(int(k), float(self._returns[k]), int(self._lengths[k])) for k in np.flatnonzero(game_end)]
        self._returns[game_end] = 0
        self._lengths[game_end] = 0
        return Step(obs, reward, terminated, truncated, final_obs, finished,
                    life_lost=life_lost if self.protocol == "nature" else None)

    def close(self) -> None:
        # Dropping the vector env joins ale-py's worker threads now rather than at garbage collection;
        # a second close (the runner may close an env it is about to replace) is a no-op.
        vec, self._vec = self._vec, None
        if vec is not None:
            vec.close()


def make_atari(env_id: str, seeds: Sequence[int], protocol: str, mode: str,
               max_episode_frames: int | None = None) -> AtariMemberEnv:
    """The registry's entry point: M members of ``ALE/<Game>-v5`` under an Atari protocol, in "train" or "eval"
    mode; ``max_episode_frames`` (emulator frames; None = the mode's cap, see EVAL_EPISODE_FRAMES) exists so
    tests can reach the cap quickly."""
    return AtariMemberEnv(env_id, seeds, protocol, mode, max_episode_frames)
