"""Known-answer tests for the exact MDPs, their member environment, tabular Q-learning and FQI.

Learning tolerances were chosen from seeds 0..9: each is at least 1.3 times the worst max |Q - Q*| seen
there, so it states what the algorithm achieves at that budget rather than what one lucky seed did. The
Q-learning tests use a uniform behaviour policy (epsilon = 1): Q-learning is off-policy (Watkins & Dayan
1992), and max |Q - Q*| over all pairs needs every pair visited often, which epsilon = 0.1 does not give.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algorithms.tabular import (
    Checkpoint,
    FQIConfig,
    QLearningConfig,
    collect_uniform,
    fitted_q_iteration,
    metric_rows,
    q_learning,
)
from envs.base import MemberEnv
from envs.registry import EnvError, known_envs, make_env
from envs.toy import (
    TOY_ENVS,
    TabularMDP,
    ToyMemberEnv,
    chain,
    gridworld,
    make_toy,
    obs_to_state,
    policy_evaluation,
    value_iteration,
)

SEEDS = [0, 1, 2]


def two_state_loop(gamma: float = 0.9) -> TabularMDP:
    """Deterministic: in s0, a0 stays and a1 moves to s1; in s1, a0 stays paying 1 and a1 moves to s0.

    Every other move pays 0."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, 0, 1] = P[1, 1, 0] = 1.0
    R = np.array([[0.0, 0.0], [1.0, 0.0]])
    return TabularMDP(P=P, R=R, gamma=gamma, start=[1.0, 0.0], terminal=[False, False])


def wait_or_try(p: float = 0.5, gamma: float = 0.9) -> TabularMDP:
    """In s0, "wait" (a0) pays 0.5 and stays; "try" (a1) reaches the terminal s1 with probability p, paying 1
    there, else stays."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = 1.0
    P[0, 1] = [1.0 - p, p]
    P[1, :, 1] = 1.0
    R = np.array([[0.5, p], [0.0, 0.0]])
    return TabularMDP(P=P, R=R, gamma=gamma, start=[1.0, 0.0], terminal=[False, True])


def q_error(Q: np.ndarray, mdp: TabularMDP) -> np.ndarray:
    """max |Q - Q*| per member."""
    return np.abs(Q - value_iteration(mdp)[0]).max(axis=(1, 2))


# --- exact solutions -------------------------------------------------------------------------------------


def test_value_iteration_matches_closed_form_on_deterministic_two_state_loop():
    # Staying in s1 is worth 1 / (1 - g) = 10; moving there from s0 g * 10 = 9; the other action in either
    # state costs one step of delay: g * 9 = 8.1.
    Q, V = value_iteration(two_state_loop(gamma=0.9))
    np.testing.assert_allclose(Q, [[8.1, 9.0], [10.0, 8.1]], atol=1e-9)
    np.testing.assert_allclose(V, [9.0, 10.0], atol=1e-9)


def test_value_iteration_matches_closed_form_with_stochastic_transition_into_terminal():
    # Waiting forever is worth 0.5 / (1 - 0.9) = 5; trying once then waiting: 0.5 + 0.9 * 0.5 * 5 = 2.75.
    # Always trying would be worth 0.5 / (1 - 0.45) < 1, so waiting is optimal; the terminal state is 0.
    Q, V = value_iteration(wait_or_try(p=0.5, gamma=0.9))
    np.testing.assert_allclose(Q, [[5.0, 2.75], [0.0, 0.0]], atol=1e-9)
    np.testing.assert_allclose(V, [5.0, 0.0], atol=1e-9)


def test_policy_evaluation_matches_closed_form_for_deterministic_and_stochastic_policies():
    # Always trying: V = 0.5 + 0.45 V.
    _, V = policy_evaluation(wait_or_try(p=0.5, gamma=0.9), np.array([1, 0]))
    np.testing.assert_allclose(V, [0.5 / (1 - 0.45), 0.0], atol=1e-12)
    # Staying in s0 forever earns nothing, and one step from s0 the optimal s1 action is worth 0.9 * 10.
    Q, V = policy_evaluation(two_state_loop(), np.array([0, 0]))
    np.testing.assert_allclose(V, [0.0, 10.0], atol=1e-12)
    np.testing.assert_allclose(Q[0], [0.0, 9.0], atol=1e-12)
    # Half wait, half try: V = 0.5 (0.5 + 0.9 V) + 0.5 (0.5 + 0.45 V) = 0.5 + 0.675 V.
    _, V = policy_evaluation(wait_or_try(), np.array([[0.5, 0.5], [1.0, 0.0]]))
    np.testing.assert_allclose(V[0], 0.5 / (1 - 0.675), atol=1e-12)


def test_gridworld_without_slip_or_step_cost_values_start_by_shortest_path():
    # Five moves from the start (bottom-left) to the goal (top-right); the fifth pays +1: V* = g^4.
    mdp = gridworld(slip=0.0, step_reward=0.0, gamma=0.9)
    _, V = value_iteration(mdp)
    assert V[mdp.start.argmax()] == pytest.approx(0.9**4, abs=1e-9)


def test_greedy_policy_of_value_iteration_is_optimal_on_registered_mdps():
    for mdp in (chain(), gridworld()):
        Q, V = value_iteration(mdp)
        np.testing.assert_allclose(policy_evaluation(mdp, Q.argmax(axis=1))[1], V, atol=1e-8)


@pytest.mark.parametrize("broken", ["P_not_stochastic", "terminal_not_absorbing", "gamma_one"])
def test_tabular_mdp_rejects_an_inconsistent_model(broken):
    mdp = wait_or_try()
    P, R, gamma = mdp.P.copy(), mdp.R, mdp.gamma
    if broken == "P_not_stochastic":
        P[0, 0] = [0.5, 0.0]
    elif broken == "terminal_not_absorbing":
        P[1, 0] = [1.0, 0.0]
    else:
        gamma = 1.0
    with pytest.raises(ValueError):
        TabularMDP(P=P, R=R, gamma=gamma, start=mdp.start, terminal=mdp.terminal)


# --- the member environment ------------------------------------------------------------------------------


def test_one_hot_env_registers_under_toy_ids():
    env = make_env("toy/chain-v0", [0, 1])
    assert isinstance(env, ToyMemberEnv) and isinstance(env, MemberEnv)
    assert env.protocol == "exact" and env.frames_per_step == 1 and env.num_members == 2
    assert env.observation_space.shape == (6,) and env.action_space.n == 2
    obs = env.reset()
    assert obs.shape == (2, 6) and obs.dtype == np.float32
    assert all(env.observation_space.contains(o) for o in obs)
    np.testing.assert_array_equal(obs_to_state(obs), env.state)
    assert set(TOY_ENVS) <= set(known_envs())


def test_unknown_toy_id_raises_env_error_naming_valid_ids():
    with pytest.raises(EnvError, match="toy/chain-v0"):
        make_toy("toy/nope-v0", [0])


def test_step_terminates_at_goal_reports_final_obs_and_autoresets():
    # Member 0 walks right into the goal of a 3-state chain; member 1 bumps into the left wall.
    env = ToyMemberEnv(chain(n=3, slip=0.0, horizon=10), [0, 1])
    env.reset()
    right_left = np.array([1, 0])
    first = env.step(right_left)
    assert not first.episode_end.any() and first.finished == []
    step = env.step(right_left)
    np.testing.assert_array_equal(step.terminated, [True, False])
    np.testing.assert_array_equal(step.truncated, [False, False])
    np.testing.assert_array_equal(step.reward, [1.0, 0.0])
    np.testing.assert_array_equal(obs_to_state(step.final_obs), [2, 0])
    np.testing.assert_array_equal(obs_to_state(step.obs), [0, 0])
    assert step.finished == [(0, 1.0, 2)]


def test_step_truncates_at_horizon_and_keeps_final_obs_to_bootstrap_from():
    env = ToyMemberEnv(chain(n=4, slip=0.0, horizon=3), [0])
    env.reset()
    ends = [env.step(np.array([a])) for a in (1, 0, 1)]
    assert not any(s.episode_end.any() for s in ends[:2])
    last = ends[-1]
    assert last.truncated[0] and not last.terminated[0]
    assert obs_to_state(last.final_obs)[0] == 1 and obs_to_state(last.obs)[0] == 0
    assert last.finished == [(0, 0.0, 3)]


def test_reaching_the_goal_on_the_last_step_is_both_terminated_and_truncated():
    # As gymnasium's TimeLimit reports it; the learner reads terminated and does not bootstrap.
    env = ToyMemberEnv(chain(n=3, slip=0.0, horizon=2), [0])
    env.reset()
    env.step(np.array([1]))
    step = env.step(np.array([1]))
    assert step.terminated[0] and step.truncated[0] and step.finished == [(0, 1.0, 2)]


def _rollout(env: ToyMemberEnv, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Reset, then step through actions [T, M]; every field stacked to [T, M]."""
    env.reset()
    steps = [env.step(a) for a in actions]
    return {"state": np.stack([obs_to_state(s.final_obs) for s in steps]),
            "reward": np.stack([s.reward for s in steps]),
            "terminated": np.stack([s.terminated for s in steps]),
            "truncated": np.stack([s.truncated for s in steps])}


def test_member_env_streams_are_per_seed_and_restart_at_reset():
    actions = np.random.default_rng(123).integers(4, size=(300, 3))
    env = make_toy("toy/gridworld-v0", SEEDS)
    joint = _rollout(env, actions)
    again = _rollout(env, actions)
    for key, value in joint.items():
        np.testing.assert_array_equal(again[key], value)
    for k, seed in enumerate(SEEDS):
        alone = _rollout(make_toy("toy/gridworld-v0", [seed]), actions[:, k:k + 1])
        for key, value in joint.items():
            np.testing.assert_array_equal(alone[key][:, 0], value[:, k])
    assert not np.array_equal(joint["state"][:, 0], joint["state"][:, 1])
    assert joint["terminated"].any()


def test_member_env_resumes_mid_episode_from_a_weights_only_checkpoint(tmp_path):
    # Horizon 7 so that episodes straddle the checkpoint and their returns and lengths must carry over.
    mdp = gridworld(horizon=7)
    actions = np.random.default_rng(5).integers(4, size=(80, 2))
    env = ToyMemberEnv(mdp, [0, 1])
    env.reset()
    whole = [env.step(a) for a in actions]
    env.reset()
    for a in actions[:41]:
        env.step(a)
    torch.save(env.state_dict(), tmp_path / "env.pt")
    resumed = ToyMemberEnv(mdp, [0, 1])
    resumed.reset()
    resumed.load_state_dict(torch.load(tmp_path / "env.pt", weights_only=True))
    for expected, a in zip(whole[41:], actions[41:], strict=True):
        step = resumed.step(a)
        np.testing.assert_array_equal(step.final_obs, expected.final_obs)
        np.testing.assert_array_equal(step.obs, expected.obs)
        np.testing.assert_array_equal(step.reward, expected.reward)
        assert step.finished == expected.finished


# --- learning --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_q_learning_reaches_chain_q_star_within_0_025_in_20k_steps():
    mdp = chain()
    cp = q_learning(mdp, SEEDS, QLearningConfig(steps=20_000, epsilon=1.0))
    assert cp.step == 20_000
    assert (q_error(cp.Q, mdp) < 0.025).all(), q_error(cp.Q, mdp)


@pytest.mark.slow
def test_q_learning_reaches_gridworld_q_star_within_0_1_in_100k_steps():
    mdp = gridworld()
    cp = q_learning(mdp, SEEDS, QLearningConfig(steps=100_000, epsilon=1.0))
    assert (q_error(cp.Q, mdp) < 0.1).all(), q_error(cp.Q, mdp)


@pytest.mark.slow
def test_fqi_reaches_chain_q_star_within_0_01_from_20k_transitions():
    mdp = chain()
    cp = fitted_q_iteration(mdp, SEEDS, FQIConfig(transitions=20_000))
    assert cp.step == FQIConfig().iterations
    assert (q_error(cp.Q, mdp) < 0.01).all(), q_error(cp.Q, mdp)


@pytest.mark.slow
def test_fqi_reaches_gridworld_q_star_within_0_06_from_80k_transitions():
    mdp = gridworld()
    cp = fitted_q_iteration(mdp, SEEDS, FQIConfig(transitions=80_000))
    assert (q_error(cp.Q, mdp) < 0.06).all(), q_error(cp.Q, mdp)


def test_tabular_fqi_equals_value_iteration_on_the_empirical_mdp_of_its_batch():
    # Averaging targets per (s, a) is the Bellman backup of the maximum-likelihood model of the batch, so
    # after K iterations FQI is within gamma^K / (1 - gamma) of that model's Q*, whatever the sampling noise.
    mdp, seed, config = gridworld(), 7, FQIConfig(transitions=2_000, iterations=300)
    batch = collect_uniform(mdp, [seed], config.transitions)
    S, A = mdp.num_states, mdp.num_actions
    counts = np.zeros((S, A, S))
    reward_sum = np.zeros((S, A))
    np.add.at(counts, (batch.s[0], batch.a[0], batch.s_next[0]), 1.0)
    np.add.at(reward_sum, (batch.s[0], batch.a[0]), batch.r[0])
    n = counts.sum(-1)
    assert (n[~mdp.terminal] > 0).all()
    P_hat = np.where(n[..., None] > 0, counts / np.maximum(n, 1)[..., None], mdp.P)
    R_hat = np.where(n > 0, reward_sum / np.maximum(n, 1), 0.0)
    empirical = TabularMDP(P=P_hat, R=R_hat, gamma=mdp.gamma, start=mdp.start, terminal=mdp.terminal)
    cp = fitted_q_iteration(mdp, [seed], config)
    np.testing.assert_allclose(cp.Q[0], value_iteration(empirical)[0], atol=1e-9)


def test_linear_fqi_with_one_hot_state_action_features_equals_tabular_fqi():
    mdp = chain()
    S, A = mdp.num_states, mdp.num_actions
    one_hot = np.eye(S * A).reshape(S, A, S * A)
    config = FQIConfig(transitions=3_000, iterations=40)
    tabular = fitted_q_iteration(mdp, SEEDS, config)
    linear = fitted_q_iteration(mdp, SEEDS, config, features=one_hot)
    np.testing.assert_allclose(linear.Q, tabular.Q, atol=1e-8)


def test_member_k_of_a_three_seed_run_equals_the_single_seed_k_run_exactly():
    mdp = gridworld()
    S, A = mdp.num_states, mdp.num_actions
    features = np.random.default_rng(0).normal(size=(S, A, 8))
    fqi = FQIConfig(transitions=2_000, iterations=20)
    runs = {
        "q_learning": lambda seeds: q_learning(mdp, seeds, QLearningConfig(steps=3_000)),
        "fqi": lambda seeds: fitted_q_iteration(mdp, seeds, fqi),
        "fqi_linear": lambda seeds: fitted_q_iteration(mdp, seeds, fqi, features=features),
    }
    for name, run in runs.items():
        joint = run(SEEDS)
        for k, seed in enumerate(SEEDS):
            alone = run([seed])
            np.testing.assert_array_equal(alone.Q[0], joint.Q[k], err_msg=name)
            np.testing.assert_array_equal(alone.visits[0], joint.visits[k], err_msg=name)
        assert not np.array_equal(joint.Q[0], joint.Q[1]), name


def test_metric_rows_score_q_star_as_zero_and_name_every_seed_and_checkpoint():
    mdp = chain()
    Q_star = value_iteration(mdp)[0]
    visits = np.ones((2, *Q_star.shape), dtype=np.int64)
    checkpoints = [Checkpoint(0, np.zeros((2, *Q_star.shape)), visits),
                   Checkpoint(5, np.stack([Q_star, Q_star + 0.25]), visits)]
    rows = list(metric_rows(checkpoints, mdp, seeds=[3, 4]))
    assert len(rows) == 2 * 2 * 2
    assert all(set(r) == {"step", "metric", "value", "seed"} for r in rows)
    last = {(r["seed"], r["metric"]): r["value"] for r in rows if r["step"] == 5}
    assert last[(3, "q_error_max")] == pytest.approx(0.0, abs=1e-9)
    assert last[(3, "greedy_value_gap")] == pytest.approx(0.0, abs=1e-9)
    assert last[(4, "q_error_max")] == pytest.approx(0.25, abs=1e-9)
    assert last[(4, "greedy_value_gap")] == pytest.approx(0.0, abs=1e-9)
