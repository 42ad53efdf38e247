"""Small exact MDPs whose optimal Q is known by value iteration, as member environments.

A ``TabularMDP`` holds the model (P, R, gamma, start distribution, terminal states, optional horizon);
``value_iteration`` gives Q* and ``policy_evaluation`` the exact value of any policy, so learners can be
scored by their distance to the truth rather than by returns alone. ``make_toy`` wraps a model as a
``MemberEnv`` whose observation is the one-hot state, so the same DQN code that runs on CartPole runs here.

Registered models:
- ``toy/chain-v0``: ``chain()``, a slippery corridor with the reward at the right end.
- ``toy/gridworld-v0``: ``gridworld()``, the 4x3 world of Russell & Norvig (2010, Fig. 17.1): a goal (+1),
  a pit (-1), a wall and slippery moves. Lange's DQN tutorial trains on a toy gridworld with the same
  ingredients but its notes do not give the layout, so we take the textbook one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

from envs.base import MemberEnv, Step
from envs.seeding import numpy_generators


# eq=False: field-wise == on arrays has no single truth value; a model is equal only to itself.
@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP with S states and A actions; arrays are read-only after construction.

    P: [S, A, S'] transition probabilities.
    R: [S, A] expected reward of taking a in s (what value iteration uses).
    gamma: discount, in [0, 1).
    start: [S] distribution of the first state of an episode (zero on terminal states).
    terminal: [S] bool; a terminal state is absorbing with zero reward, so V* and Q* are 0 there.
    horizon: time limit in agent steps for sampled episodes (None: run until a terminal state). It is not
        part of the state, so Q* ignores it and a learner must bootstrap through it.
    R_transition: [S, A, S'] reward paid on the transition s, a -> s' when it depends on s' (reaching a goal
        through a slippery move); its expectation under P must equal R. None: every transition from (s, a)
        pays R[s, a].
    """

    P: np.ndarray
    R: np.ndarray
    gamma: float
    start: np.ndarray
    terminal: np.ndarray
    horizon: int | None = None
    R_transition: np.ndarray | None = None

    def __post_init__(self):
        P = np.array(self.P, dtype=np.float64)
        R = np.array(self.R, dtype=np.float64)
        start = np.array(self.start, dtype=np.float64)
        terminal = np.array(self.terminal, dtype=bool)
        if P.ndim != 3 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must be [S, A, S], got shape {P.shape}")
        S, A, _ = P.shape
        if R.shape != (S, A) or start.shape != (S,) or terminal.shape != (S,):
            raise ValueError(f"R must be [S, A] = {(S, A)}, start and terminal [S] = {(S,)}; got "
                             f"R {R.shape}, start {start.shape}, terminal {terminal.shape}")
        if (P < 0).any() or not np.allclose(P.sum(-1), 1.0, atol=1e-9):
            raise ValueError("every P[s, a] must be a probability distribution over next states")
        if (start < 0).any() or not np.isclose(start.sum(), 1.0, atol=1e-9) or start[terminal].any():
            raise ValueError("start must be a probability distribution over non-terminal states")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")
        if self.horizon is not None and self.horizon < 1:
            raise ValueError(f"horizon must be None or >= 1, got {self.horizon}")
        t = np.flatnonzero(terminal)
        if not np.allclose(P[t, :, t], 1.0) or not np.allclose(R[t], 0.0):
            raise ValueError("terminal states must be absorbing with zero reward")
        arrays = {"P": P, "R": R, "start": start, "terminal": terminal}
        if self.R_transition is not None:
            R_transition = np.array(self.R_transition, dtype=np.float64)
            if R_transition.shape != P.shape or not np.allclose((P * R_transition).sum(-1), R, atol=1e-9):
                raise ValueError("R_transition must be [S, A, S] with expectation R under P")
            arrays["R_transition"] = R_transition
        for name, a in arrays.items():
            a.flags.writeable = False
            object.__setattr__(self, name, a)

    @property
    def num_states(self) -> int:
        return self.P.shape[0]

    @property
    def num_actions(self) -> int:
        return self.P.shape[1]

    def reward(self, s: int, a: int, s_next: int) -> float:
        """The reward paid on the sampled transition s, a -> s_next."""
        if self.R_transition is None:
            return float(self.R[s, a])
        return float(self.R_transition[s, a, s_next])


def value_iteration(mdp: TabularMDP, tol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Q* [S, A] and V* [S] to within ``tol`` in max norm (Bellman 1957; Sutton & Barto 2018, Sec. 4.4).

    Stops when successive iterates differ by at most tol (1 - gamma) / gamma: the Bellman optimality
    operator is a gamma-contraction, so ||Q_k+1 - Q*|| <= gamma / (1 - gamma) ||Q_k+1 - Q_k|| <= tol
    (Puterman 1994, Sec. 6.3).
    """
    Q = np.zeros_like(mdp.R)
    # With gamma = 0 the first backup is exact (Q* = R); the floor keeps the division finite.
    threshold = tol * (1.0 - mdp.gamma) / max(mdp.gamma, np.finfo(float).tiny)
    while True:
        Q_next = mdp.R + mdp.gamma * mdp.P @ Q.max(axis=1)
        delta = np.abs(Q_next - Q).max()
        Q = Q_next
        if delta <= threshold:
            return Q, Q.max(axis=1)


def policy_evaluation(mdp: TabularMDP, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact Q^pi [S, A] and V^pi [S] by solving the linear Bellman equation V = R_pi + gamma P_pi V.

    policy: [S] greedy actions, or [S, A] action probabilities.
    """
    policy = np.asarray(policy)
    if policy.ndim == 1:
        policy = np.eye(mdp.num_actions)[policy]
    R_pi = (policy * mdp.R).sum(axis=1)
    P_pi = np.einsum("sa,sat->st", policy, mdp.P)
    V = np.linalg.solve(np.eye(mdp.num_states) - mdp.gamma * P_pi, R_pi)
    return mdp.R + mdp.gamma * mdp.P @ V, V


def chain(n: int = 6, slip: float = 0.1, gamma: float = 0.9, horizon: int = 50) -> TabularMDP:
    """A corridor of n states 0 .. n-1; the episode starts in 0 and ends in the goal n-1.

    Actions: 0 = left, 1 = right. A move goes the opposite way with probability ``slip``; moving left in
    state 0 stays there. Moving into the goal pays +1, every other move 0, so V*(s) grows like
    gamma^(distance to goal) and Q* separates the two actions in every state. Defaults are ours: long enough
    that bootstrapping matters (the start is 5 moves from the goal), small enough for exact tests.
    """
    if n < 2 or not 0.0 <= slip <= 1.0:
        raise ValueError(f"chain needs n >= 2 and slip in [0, 1], got n={n}, slip={slip}")
    goal = n - 1
    P = np.zeros((n, 2, n))
    for s in range(goal):
        left, right = max(s - 1, 0), s + 1
        P[s, 0, left] += 1.0 - slip
        P[s, 0, right] += slip
        P[s, 1, right] += 1.0 - slip
        P[s, 1, left] += slip
    P[goal, :, goal] = 1.0
    R_transition = np.zeros_like(P)
    R_transition[:goal, :, goal] = 1.0
    return TabularMDP(P=P, R=(P * R_transition).sum(-1), gamma=gamma, start=np.eye(n)[0],
                      terminal=np.arange(n) == goal, horizon=horizon, R_transition=R_transition)


GRID_LAYOUT = (
    "...G",
    ".#.P",
    "S...",
)
"""Russell & Norvig (2010), Fig. 17.1, top row first: S start, G goal, P pit, # wall, . free."""

GRID_MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))
"""Actions 0..3 = up, right, down, left as (row, column) offsets."""


def gridworld(layout: Sequence[str] = GRID_LAYOUT, slip: float = 0.2, step_reward: float = -0.04,
              gamma: float = 0.9, horizon: int = 100) -> TabularMDP:
    """A gridworld drawn as text; states are the non-wall cells in reading order (top-left first).

    A move goes in the intended direction with probability 1 - slip and to each side (90 degrees) with
    probability slip / 2; moving into a wall or the edge stays in place. Moving into G pays +1, into P pays
    -1 (both end the episode), every other move pays ``step_reward``. Default layout, slip 0.2 and step
    reward -0.04 are Russell & Norvig's (2010, Sec. 17.1); gamma 0.9 and the horizon are ours (they use
    gamma = 1, which value iteration here does not accept).

    Default layout, state numbers in brackets:
        [0] [1] [2] [3]G
        [4]  #  [5] [6]P
        [7] [8] [9] [10]   start [7]
    """
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"slip must be in [0, 1], got {slip}")
    cells = [(r, c) for r, row in enumerate(layout) for c, ch in enumerate(row) if ch != "#"]
    index = {cell: i for i, cell in enumerate(cells)}
    kinds = [layout[r][c] for r, c in cells]
    S, A = len(cells), len(GRID_MOVES)
    terminal = np.array([k in "GP" for k in kinds])
    exit_reward = {"G": 1.0, "P": -1.0}

    def land(r: int, c: int, move: int) -> int:
        dr, dc = GRID_MOVES[move]
        return index.get((r + dr, c + dc), index[(r, c)])

    P = np.zeros((S, A, S))
    R_transition = np.zeros_like(P)
    for s, (r, c) in enumerate(cells):
        if terminal[s]:
            P[s, :, s] = 1.0
            continue
        for a in range(A):
            sides = ((a + 1) % A, (a - 1) % A)
            for move, p in ((a, 1.0 - slip), (sides[0], slip / 2), (sides[1], slip / 2)):
                P[s, a, land(r, c, move)] += p
            R_transition[s, a] = [exit_reward.get(k, step_reward) for k in kinds]
    start = np.array([k == "S" for k in kinds], dtype=np.float64)
    if start.sum() != 1.0:
        raise ValueError("layout must contain exactly one start cell S")
    return TabularMDP(P=P, R=(P * R_transition).sum(-1), gamma=gamma, start=start, terminal=terminal,
                      horizon=horizon, R_transition=R_transition)


TOY_MDPS: dict[str, Callable[[], TabularMDP]] = {
    "toy/chain-v0": chain,
    "toy/gridworld-v0": gridworld,
}
TOY_ENVS = tuple(TOY_MDPS)


def make_mdp(env_id: str) -> TabularMDP:
    """The model behind a registered toy id, with its default parameters."""
    if env_id not in TOY_MDPS:
        from envs.registry import EnvError

        raise EnvError(f"unknown toy env {env_id!r}; valid: {', '.join(TOY_ENVS)}")
    return TOY_MDPS[env_id]()


def obs_to_state(obs: np.ndarray) -> np.ndarray:
    """Integer states from one-hot observations (any leading shape)."""
    return np.asarray(obs).argmax(axis=-1)


class ToyMemberEnv(MemberEnv):
    """M independent copies of a TabularMDP; observations are one-hot states (float32).

    Member k samples its start states and transitions from its own ``env`` stream only; ``reset`` restarts
    every stream from the seeds, as GymMemberEnv reseeds gymnasium at reset.
    """

    protocol = "exact"
    frames_per_step = 1

    def __init__(self, mdp: TabularMDP, seeds: Sequence[int]):
        self.mdp = mdp
        self.seeds = [int(s) for s in seeds]
        self.num_members = len(self.seeds)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape=(mdp.num_states,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(mdp.num_actions)
        # Inverse-CDF sampling with one uniform per draw (several times faster than Generator.choice);
        # dividing by the last entry makes it exactly 1, so a draw in [0, 1) never falls off the end.
        self._P_cdf = _cdf(mdp.P)
        self._start_cdf = _cdf(mdp.start)
        self._eye = np.eye(mdp.num_states, dtype=np.float32)
        self._rngs: list[np.random.Generator] = []
        self._state: np.ndarray | None = None
        self._returns = np.zeros(self.num_members)
        self._lengths = np.zeros(self.num_members, dtype=np.int64)

    @property
    def state(self) -> np.ndarray:
        """The integer state [M] each member acts in next."""
        if self._state is None:
            raise RuntimeError("call reset() before reading the state")
        return self._state.copy()

    def reset(self) -> np.ndarray:
        self._rngs = numpy_generators(self.seeds, "env")
        self._state = np.array([_draw(self._start_cdf, g) for g in self._rngs], dtype=np.int64)
        self._returns[:] = 0
        self._lengths[:] = 0
        return self.one_hot(self._state)

    def step(self, actions: np.ndarray) -> Step:
        """Terminated when a terminal state is entered; truncated when the episode reaches the horizon
        (both can be true on the same step, as with gymnasium's TimeLimit)."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        M, horizon = self.num_members, self.mdp.horizon
        reward = np.zeros(M, dtype=np.float32)
        terminated = np.zeros(M, dtype=bool)
        truncated = np.zeros(M, dtype=bool)
        final_state = np.empty(M, dtype=np.int64)
        finished = []
        for k in range(M):
            s, a = int(self._state[k]), int(actions[k])
            s_next = _draw(self._P_cdf[s, a], self._rngs[k])
            r = self.mdp.reward(s, a, s_next)
            self._returns[k] += r
            self._lengths[k] += 1
            reward[k] = r
            terminated[k] = self.mdp.terminal[s_next]
            truncated[k] = horizon is not None and self._lengths[k] >= horizon
            final_state[k] = s_next
            if terminated[k] or truncated[k]:
                finished.append((k, float(self._returns[k]), int(self._lengths[k])))
                self._returns[k] = 0
                self._lengths[k] = 0
                s_next = _draw(self._start_cdf, self._rngs[k])
            self._state[k] = s_next
        return Step(self.one_hot(self._state), reward, terminated, truncated, self.one_hot(final_state),
                    finished)

    def state_dict(self) -> dict:
        """Current states, episode counters and every member's generator, so a resumed run continues the
        same episodes and random streams (tensors and plain values: loads with weights_only=True)."""
        if self._state is None:
            raise RuntimeError("call reset() before state_dict()")
        return {"state": torch.from_numpy(self._state.copy()),
                "returns": torch.from_numpy(self._returns.copy()),
                "lengths": torch.from_numpy(self._lengths.copy()),
                "rngs": [g.bit_generator.state for g in self._rngs]}

    def load_state_dict(self, state: dict) -> None:
        self._rngs = numpy_generators(self.seeds, "env")
        for g, s in zip(self._rngs, state["rngs"], strict=True):
            g.bit_generator.state = s
        self._state = state["state"].numpy().copy()
        self._returns[:] = state["returns"].numpy()
        self._lengths[:] = state["lengths"].numpy()

    def one_hot(self, states: np.ndarray) -> np.ndarray:
        """Observations [..., S] (float32) for integer states."""
        return self._eye[states]


def _cdf(p: np.ndarray) -> np.ndarray:
    c = np.cumsum(p, axis=-1)
    return c / c[..., -1:]


def _draw(cdf: np.ndarray, rng: np.random.Generator) -> int:
    return int(cdf.searchsorted(rng.random(), side="right"))


def make_toy(env_id: str, seeds: Sequence[int]) -> ToyMemberEnv:
    """The registry's entry point: M copies of a registered toy MDP, member k seeded by seeds[k]."""
    return ToyMemberEnv(make_mdp(env_id), seeds)
