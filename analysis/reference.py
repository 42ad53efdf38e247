"""Published reference numbers (the project's copy under analysis/reference/), as DataFrames.

Each loader returns the source's own units and names and records its citation in ``df.attrs["source"]``;
tables that print a published number cite that string (DESIGN.md: "cites the source in every table").
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"

DQN_ZOO = "dqn_zoo"
MNIH2015 = "mnih2015"
# MinAtar has no human scores: its scores are normalized between a random policy's return (measured here) and
# Young & Tian 2019's DQN at 5M frames (read off their figure), the way Atari's are between random and human.
MINATAR_DQN5M = "minatar_dqn5m"
NORMALIZATIONS = (DQN_ZOO, MNIH2015, MINATAR_DQN5M)
MINATAR_REFERENCE_FRAMES = 5_000_000

SOURCES = {
    DQN_ZOO: "human and random Atari-57 scores as tabulated in DeepMind's DQN Zoo (dqn_zoo/atari_data.py)",
    MNIH2015: "Mnih et al. 2015, Nature, Extended Data Table 2",
    "ddqn_summary": "van Hasselt, Guez, Silver 2016 (AAAI), Table 1",
    "naf_vs_ddpg": "Gu, Lillicrap, Sutskever, Levine 2016 (ICML), Table 1",
    "minatar_curves": "Young & Tian 2019, DQN learning curve read off img/learning_curves.gif (github.com/kenjyoung/"
                      "MinAtar at 4241f24) by experiments/scripts/read_minatar_curves.py: mean return of the 100 "
                      "training episodes (exploring) ending at that frame count, mean of 30 runs",
    "minatar_random": "mean return of 1,000 games of a uniformly random policy per MinAtar game, measured by "
                      "experiments/scripts/minatar_random_scores.py under the minatar protocol (commit and "
                      "version in the table)",
}

# Gu et al. 2016 used their own MuJoCo tasks; these gymnasium v5 tasks are the closest analogues, so a
# published number beside ours is context (reward scales differ), never a target to match.
GU2016_DOMAIN_ANALOGUE = {
    "Reacher-v5": "Reacher",
    "HalfCheetah-v5": "Cheetah",
    "Walker2d-v5": "Walker2d",
    "Ant-v5": "Ant",
    "Swimmer-v5": "Swimmer6",
}


def _read(name: str, source_key: str) -> pd.DataFrame:
    df = pd.read_csv(REFERENCE_DIR / name)
    df.attrs["source"] = SOURCES[source_key]
    return df


def published_protocols() -> pd.DataFrame:
    """Which protocol each published table beside ours was measured under (source, file, protocol,
    compare_with), for the report."""
    return pd.read_csv(REFERENCE_DIR / "published_protocols.csv")


def human_random_scores(table: str = DQN_ZOO) -> pd.DataFrame:
    """Columns game, random, human from the named human table (``dqn_zoo``: 57 games; ``mnih2015``: 7 games).

    The two tables disagree on some games (Pong human 14.6 vs 9.3), so a normalized score must say which
    one it used (DESIGN.md, Protocols); ``df.attrs["table"]`` carries the name.
    """
    if table == DQN_ZOO:
        df = _read("atari_human_random_scores.csv", DQN_ZOO)
    elif table == MNIH2015:
        df = mnih2015_scores()[["game", "random", "human"]]
        df.attrs["source"] = SOURCES[MNIH2015]
    else:
        raise ValueError(f"unknown human table {table!r}; valid: {DQN_ZOO}, {MNIH2015}")
    df.attrs["table"] = table
    return df


def mnih2015_scores() -> pd.DataFrame:
    """Mnih et al. 2015 on 7 games: game, random, human, dqn, dqn_std (50M agent steps = 200M frames)."""
    return _read("dqn_mnih2015_selected.csv", MNIH2015)


def naf_vs_ddpg_table1() -> pd.DataFrame:
    """Gu et al. 2016 Table 1: domain, random, ddpg_best, ddpg_episodes, naf_best, naf_episodes."""
    return _read("naf_vs_ddpg_gu2016_table1.csv", "naf_vs_ddpg")


def minatar_dqn_curves() -> pd.DataFrame:
    """Young & Tian 2019's DQN curve per MinAtar game read off their figure: env, algo, frames,
    read_at_frames, return, low, high (empty where other curves hide DQN's)."""
    return _read("minatar_dqn_young2019_curves.csv", "minatar_curves")


def minatar_random_scores() -> pd.DataFrame:
    """A uniformly random policy's mean return per MinAtar v0 game (env, random, sem, episodes, provenance)."""
    return _read("minatar_random_scores.csv", "minatar_random")


def minatar_normalization() -> pd.DataFrame:
    """env, random, reference per MinAtar v0 game: the anchors of ``MINATAR_DQN5M`` normalized scores (0: a
    random policy, 1: Young & Tian 2019's DQN at 5M frames, a training-episode mean read off their figure)."""
    curves = minatar_dqn_curves()
    dqn = curves[curves["frames"] == MINATAR_REFERENCE_FRAMES].set_index("env")["return"]
    table = minatar_random_scores()[["env", "random"]].assign(reference=lambda t: t["env"].map(dqn))
    table.attrs["source"] = (f"0: {SOURCES['minatar_random']}; 1: {SOURCES['minatar_curves']}, at "
                             f"{MINATAR_REFERENCE_FRAMES:,} frames")
    return table


def normalization_label(table: str) -> str:
    """The axis label of scores normalized with ``table`` (one of NORMALIZATIONS)."""
    if table == MINATAR_DQN5M:
        return "normalized score (0 random, 1 DQN at 5M frames)"
    if table in (DQN_ZOO, MNIH2015):
        return f"human normalized score ({table})"
    raise ValueError(f"unknown normalization {table!r}; valid: {', '.join(NORMALIZATIONS)}")


def ddqn_summary() -> pd.DataFrame:
    """van Hasselt et al. 2016 Table 1 summary over 49 games: statistic, evaluation, dqn, ddqn, ddqn_tuned."""
    return _read("ddqn_vanhasselt2016_summary.csv", "ddqn_summary")


def is_atari(env: str) -> bool:
    """An ALE id (``ALE/Pong-v5``, ``PongNoFrameskip-v4``): MinAtar/Breakout-v0 is not Atari Breakout, and
    no Atari table (published scores, human and random scores, log-scale games) applies to it."""
    return env.startswith("ALE/") or re.search(r"NoFrameskip-v\d+$", env) is not None


def atari_game_key(env: str) -> str:
    """``ALE/SpaceInvaders-v5`` or ``SpaceInvadersNoFrameskip-v4`` -> ``space_invaders``, the tables' key."""
    if not is_atari(env):
        raise ValueError(f"{env!r} is not an Atari (ALE) id: ALE/<Game>-v5 or <Game>NoFrameskip-v4")
    name = env.split("/")[-1]
    name = re.sub(r"(NoFrameskip)?-v\d+$", "", name)
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# Fixed return targets for data efficiency (episodes to reach the target), keyed by the gymnasium task without
# its -fixedH suffix: gymnasium's own registered ``reward_threshold`` ("solved"), gymnasium 1.x
# (gymnasium/envs/__init__.py). Tasks registered without one (Pendulum-v1, Walker2d-v5) have no entry.
GYMNASIUM_RETURN_TARGETS = {
    "CartPole-v1": 475.0,
    "Acrobot-v1": -100.0,
    "InvertedPendulum-v5": 950.0,
    "InvertedDoublePendulum-v5": 9100.0,
    "Reacher-v5": -3.75,
    "Pusher-v5": 0.0,
    "HalfCheetah-v5": 4800.0,
    "Swimmer-v5": 360.0,
    "Hopper-v5": 3800.0,
    "Ant-v5": 6000.0,
}
GYMNASIUM_TARGETS_SOURCE = "gymnasium 1.x task registrations, reward_threshold"

# The largest |reward| of one step, where the task bounds it (from each task's reward definition in gymnasium):
# CartPole +1 per step; Acrobot -1 per step; MountainCar -1 per step; Pendulum -(theta^2 + 0.1 thetadot^2 +
# 0.001 u^2) with |theta| <= pi, |thetadot| <= 8, |u| <= 2. MuJoCo locomotion rewards are unbounded.
REWARD_BOUNDS = {
    "CartPole-v1": 1.0,
    "Acrobot-v1": 1.0,
    "MountainCar-v0": 1.0,
    "Pendulum-v1": 3.141592653589793 ** 2 + 0.1 * 8 ** 2 + 0.001 * 2 ** 2,
}


def return_target(env: str) -> float | None:
    """The fixed return target of a task (GYMNASIUM_RETURN_TARGETS), or None where gymnasium gives none."""
    return GYMNASIUM_RETURN_TARGETS.get(env.replace("-fixedH", ""))
