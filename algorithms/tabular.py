"""Tabular Q-learning and fitted Q-iteration on exact MDPs, scored against value iteration.

Both keep one Q table per member, Q [M, S, A], and draw every random number from the member's own streams
(``env`` for the environment, ``explore`` for Q-learning's behaviour, ``behaviour`` for FQI's data), so
member k of a run equals a run with the single seed k, bit for bit.

- Q-learning (Watkins & Dayan 1992; Sutton & Barto 2018, Sec. 6.5): learns online from the episodes of the
  MDP under epsilon-greedy behaviour, Q(s,a) += alpha_N(s,a) (r + gamma max_a' Q(s',a') - Q(s,a)).
- Fitted Q-iteration (Ernst et al. 2005; Riedmiller 2005): collects a fixed batch with a uniform random
  policy, then repeats Q_{k+1} = regress(r + gamma max_a' Q_k(s',a')) over the batch, with a tabular
  regression (the mean target of each (s, a)) or least squares on linear features phi(s, a).

Training yields ``Checkpoint``s; ``metric_rows`` turns them into tidy rows scored against Q* (max |Q - Q*|)
and against V* (the value lost by acting greedily on Q), so a run loop and whatever writes rows stay apart.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from algorithms.members import numpy_generators
from envs.toy import TabularMDP, ToyMemberEnv, obs_to_state, policy_evaluation, value_iteration


@dataclass(frozen=True)
class QLearningConfig:
    """Tabular Q-learning with epsilon-greedy behaviour and a visit-count step size."""

    steps: int = 100_000
    """Agent steps per member (ours)."""
    epsilon: float = 0.1
    """Probability of a uniformly random action (Sutton & Barto 2018, Sec. 6.5, Example 6.6). Scoring
    max |Q - Q*| over all pairs needs every pair visited often: 1.0 (uniform behaviour) does that, and
    Q-learning, being off-policy, still learns Q*."""
    lr: float = 1.0
    """Step size scale: alpha = lr / N(s, a)^lr_omega, N counting updates of (s, a). lr_omega = 0 gives a
    constant step size lr (Sutton & Barto 2018, Example 6.7 use 0.1). 1.0 is ours: the first update of a pair
    then replaces its initial value, as under the 1/N schedule (Watkins & Dayan 1992)."""
    lr_omega: float = 0.8
    """Exponent of the step-size schedule. Even-Dar & Mansour (2003) bound the convergence time polynomially
    in 1/(1 - gamma) for omega in (1/2, 1) and show it exponential for omega = 1 (1/N); 0.8 is ours."""
    q_init: float = 0.0
    """Initial Q of non-terminal states (Sutton & Barto 2018, Sec. 6.5: arbitrary; terminal states are 0)."""
    eval_every: int = 1_000
    """Agent steps between checkpoints (ours)."""


@dataclass(frozen=True)
class FQIConfig:
    """Fitted Q-iteration on a batch collected by a uniform random policy."""

    transitions: int = 50_000
    """Batch size per member, in agent steps of the behaviour policy (ours: every (s, a) of the registered
    toy MDPs is then seen hundreds of times)."""
    iterations: int = 150
    """K, the number of regressions; what is left of Q_0 shrinks like gamma^K (ours: 0.9^150 < 2e-7)."""
    ridge: float = 1e-8
    """L2 penalty of the least-squares fit on linear features (ours: only there so the normal equations
    are solvable when a feature never occurs in the batch)."""


@dataclass
class Checkpoint:
    """Q tables of all members after ``step`` agent steps (Q-learning) or ``step`` iterations k (FQI).

    Q: [M, S, A]. visits: [M, S, A] Q-learning updates (Q-learning) or batch transitions (FQI) per pair.
    """

    step: int
    Q: np.ndarray
    visits: np.ndarray


@dataclass
class Transitions:
    """A batch per member, arrays [M, N]: s, a, r, s_next (the state reached, also when the episode was
    truncated there), terminated (no bootstrap from s_next)."""

    s: np.ndarray
    a: np.ndarray
    r: np.ndarray
    s_next: np.ndarray
    terminated: np.ndarray


def epsilon_greedy(q: np.ndarray, epsilon: float, rng: np.random.Generator) -> int:
    """A uniformly random action with probability epsilon, else a greedy one.

    Ties are broken at random: with a constant initial table, argmax's first index would make the early
    behaviour favour action 0 in every state.
    """
    if rng.random() < epsilon:
        return int(rng.integers(q.shape[0]))
    best = np.flatnonzero(q == q.max())
    return int(best[0] if best.size == 1 else rng.choice(best))


def q_learning_checkpoints(mdp: TabularMDP, seeds: Sequence[int],
                           config: QLearningConfig = QLearningConfig()) -> Iterator[Checkpoint]:
    """Train one table per seed; yield a Checkpoint at step 0, every ``eval_every`` steps and at the end."""
    env = ToyMemberEnv(mdp, seeds)
    rngs = numpy_generators(seeds, "explore")
    M, S, A = len(seeds), mdp.num_states, mdp.num_actions
    members = np.arange(M)
    Q = np.full((M, S, A), config.q_init)
    Q[:, mdp.terminal] = 0.0
    N = np.zeros((M, S, A), dtype=np.int64)
    env.reset()
    s = env.state
    yield Checkpoint(0, Q.copy(), N.copy())
    for t in range(1, config.steps + 1):
        a = np.array([epsilon_greedy(Q[k, s[k]], config.epsilon, rngs[k]) for k in range(M)])
        step = env.step(a)
        # Bootstrap from the state actually reached (final_obs), not the next episode's start; a
        # truncated episode still bootstraps, a terminated one does not.
        s_next = obs_to_state(step.final_obs)
        bootstrap = np.where(step.terminated, 0.0, Q[members, s_next].max(axis=1))
        N[members, s, a] += 1
        alpha = config.lr / N[members, s, a] ** config.lr_omega
        Q[members, s, a] += alpha * (step.reward + mdp.gamma * bootstrap - Q[members, s, a])
        s = env.state
        if t % config.eval_every == 0 or t == config.steps:
            yield Checkpoint(t, Q.copy(), N.copy())


def q_learning(mdp: TabularMDP, seeds: Sequence[int],
               config: QLearningConfig = QLearningConfig()) -> Checkpoint:
    """The final Checkpoint of ``q_learning_checkpoints``."""
    return deque(q_learning_checkpoints(mdp, seeds, config), maxlen=1)[0]


def collect_uniform(mdp: TabularMDP, seeds: Sequence[int], transitions: int) -> Transitions:
    """``transitions`` agent steps per member of the uniform random policy, episodes reset automatically."""
    env = ToyMemberEnv(mdp, seeds)
    rngs = numpy_generators(seeds, "behaviour")
    M = len(seeds)
    s = np.empty((M, transitions), dtype=np.int64)
    a = np.empty_like(s)
    s_next = np.empty_like(s)
    r = np.empty((M, transitions))
    terminated = np.empty((M, transitions), dtype=bool)
    env.reset()
    for t in range(transitions):
        s[:, t] = env.state
        a[:, t] = [rng.integers(mdp.num_actions) for rng in rngs]
        step = env.step(a[:, t])
        r[:, t] = step.reward
        s_next[:, t] = obs_to_state(step.final_obs)
        terminated[:, t] = step.terminated
    return Transitions(s, a, r, s_next, terminated)


def fitted_q_iteration_checkpoints(mdp: TabularMDP, seeds: Sequence[int], config: FQIConfig = FQIConfig(),
                                   features: np.ndarray | None = None) -> Iterator[Checkpoint]:
    """FQI on a uniform random batch; yield a Checkpoint at k = 0 and after every iteration k.

    features: None for the tabular regression (each visited (s, a) gets the mean of its targets; an
    unvisited pair keeps Q_0 = 0), or phi [S, A, d] for ridge least squares Q(s, a) = phi(s, a) . theta.
    Terminal states keep Q = 0 either way: their value is known, and no target bootstraps from them.
    """
    batch = collect_uniform(mdp, seeds, config.transitions)
    M, S, A = len(seeds), mdp.num_states, mdp.num_actions
    members = np.arange(M)[:, None]
    pair = (members * S + batch.s) * A + batch.a
    visits = np.bincount(pair.ravel(), minlength=M * S * A).reshape(M, S, A)
    if features is None:
        regress = _tabular_regression(pair, visits)
    else:
        regress = _linear_regression(np.asarray(features, dtype=np.float64), batch, config.ridge)
    Q = np.zeros((M, S, A))
    yield Checkpoint(0, Q.copy(), visits)
    for k in range(1, config.iterations + 1):
        target = batch.r + mdp.gamma * np.where(batch.terminated, 0.0, Q.max(axis=2)[members, batch.s_next])
        Q = regress(target, Q)
        Q[:, mdp.terminal] = 0.0
        yield Checkpoint(k, Q.copy(), visits)


def _tabular_regression(pair: np.ndarray, visits: np.ndarray):
    def regress(target: np.ndarray, Q: np.ndarray) -> np.ndarray:
        sums = np.bincount(pair.ravel(), weights=target.ravel(), minlength=visits.size).reshape(visits.shape)
        return np.where(visits > 0, sums / np.maximum(visits, 1), Q)

    return regress


def _linear_regression(phi: np.ndarray, batch: Transitions, ridge: float):
    S, A, d = phi.shape
    # The batch is fixed, so each member's map from targets to fitted Q is one matrix, built once:
    # Q = phi (X'X + ridge I)^-1 X' y with X the batch's features.
    hat = []
    for s, a in zip(batch.s, batch.a, strict=True):
        X = phi[s, a]
        hat.append(phi.reshape(S * A, d) @ np.linalg.solve(X.T @ X + ridge * np.eye(d), X.T))
    hat = np.stack(hat)

    def regress(target: np.ndarray, Q: np.ndarray) -> np.ndarray:
        return np.einsum("mqn,mn->mq", hat, target).reshape(Q.shape)

    return regress


def fitted_q_iteration(mdp: TabularMDP, seeds: Sequence[int], config: FQIConfig = FQIConfig(),
                       features: np.ndarray | None = None) -> Checkpoint:
    """The final Checkpoint of ``fitted_q_iteration_checkpoints``."""
    return deque(fitted_q_iteration_checkpoints(mdp, seeds, config, features), maxlen=1)[0]


def metric_rows(checkpoints: Iterable[Checkpoint], mdp: TabularMDP, seeds: Sequence[int]) -> Iterator[dict]:
    """Tidy rows {"step", "metric", "value", "seed"} per checkpoint and member:

    - q_error_max: max over (s, a) of |Q(s, a) - Q*(s, a)|;
    - greedy_value_gap: max over s of V*(s) - V^pi(s) for pi greedy in Q (ties to the lowest action).
    """
    Q_star, V_star = value_iteration(mdp)
    for cp in checkpoints:
        for k, seed in enumerate(seeds):
            _, V_pi = policy_evaluation(mdp, cp.Q[k].argmax(axis=1))
            yield {"step": cp.step, "metric": "q_error_max", "value": float(np.abs(cp.Q[k] - Q_star).max()),
                   "seed": int(seed)}
            yield {"step": cp.step, "metric": "greedy_value_gap", "value": float((V_star - V_pi).max()),
                   "seed": int(seed)}


# ---------------------------------------------------------------------------------------------- run contract
METHODS = ("q_learning", "fitted_q")


@dataclass(frozen=True)
class Config:
    """Settings of a ``qrepro train`` run of a tabular method; --steps is Q-learning's agent steps, or the
    size of FQI's batch in agent steps of the uniform behaviour policy."""

    method: str = "q_learning"
    """q_learning (Watkins & Dayan 1992) or fitted_q (Ernst et al. 2005)."""
    epsilon: float = QLearningConfig.epsilon
    """Q-learning: probability of a uniformly random action (see QLearningConfig)."""
    lr: float = QLearningConfig.lr
    """Q-learning: step size scale, alpha = lr / N(s, a)^lr_omega."""
    lr_omega: float = QLearningConfig.lr_omega
    """Q-learning: exponent of the step-size schedule (see QLearningConfig)."""
    q_init: float = QLearningConfig.q_init
    """Q-learning: initial Q of non-terminal states."""
    eval_every: int = QLearningConfig.eval_every
    """Q-learning: agent steps between scored checkpoints."""
    iterations: int = FQIConfig.iterations
    """FQI: number of regressions K."""


def validate(cfg: Config) -> list[str]:
    errors = []
    if cfg.method not in METHODS:
        errors.append(f"method={cfg.method!r}: valid: {', '.join(METHODS)}")
    if not 0 <= cfg.epsilon <= 1:
        errors.append(f"epsilon={cfg.epsilon}: must be in [0, 1]")
    for key in ("lr", "eval_every", "iterations"):
        if getattr(cfg, key) <= 0:
            errors.append(f"{key}={getattr(cfg, key)}: must be > 0")
    if cfg.lr_omega < 0:
        errors.append(f"lr_omega={cfg.lr_omega}: must be >= 0")
    return errors


def checkpoints(cfg: Config, mdp: TabularMDP, seeds: Sequence[int], steps: int) -> Iterator[Checkpoint]:
    """The checkpoints of the configured method, with --steps as its budget."""
    if cfg.method == "q_learning":
        return q_learning_checkpoints(mdp, seeds, QLearningConfig(
            steps=steps, epsilon=cfg.epsilon, lr=cfg.lr, lr_omega=cfg.lr_omega, q_init=cfg.q_init,
            eval_every=cfg.eval_every))
    return fitted_q_iteration_checkpoints(mdp, seeds, FQIConfig(transitions=steps, iterations=cfg.iterations))
