"""Returns of a uniformly random policy on the five MinAtar games -> analysis/reference/minatar_random_scores.csv.

The lower anchor of MinAtar-normalized scores (analysis.reference.minatar_normalization): as Atari scores are
normalized between a random and a human score, MinAtar scores are normalized between a random policy's return
and Young & Tian 2019's DQN at 5M frames (read off their figure), so that games whose returns differ by an order
of magnitude can be aggregated (IQM, performance profiles). No published random score exists for MinAtar, so
this script measures it, under the very protocol the suites train under (v0 ids: all 6 actions, sticky actions
0.1, difficulty ramping, no episode cap; envs/minatar.py), and writes its provenance into the table.

Usage: python experiments/scripts/minatar_random_scores.py [--episodes N] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from envs.minatar import GAMES  # noqa: E402
from envs.registry import make_env  # noqa: E402
from experiments.provenance import git_commit  # noqa: E402

MEMBERS = 10  # games played side by side, one seed each (0-9)
POLICY_SEED = 12345  # the random policy's own stream, apart from the games'


def random_returns(env_id: str, episodes: int) -> list[float]:
    """Returns of the first ``episodes`` games a uniformly random policy finishes, over MEMBERS seeded games."""
    env = make_env(env_id, list(range(MEMBERS)), "eval", "minatar")
    rng = np.random.default_rng(POLICY_SEED)
    n = int(env.action_space.n)
    env.reset()
    done: list[tuple[int, int, float]] = []  # (order finished, member, return)
    while len(done) < episodes:
        step = env.step(rng.integers(0, n, size=MEMBERS))
        done += [(len(done) + i, int(m), float(r)) for i, (m, r, _) in enumerate(step.finished)]
    env.close()
    return [r for _, _, r in sorted(done)[:episodes]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1_000)
    parser.add_argument("--out", type=Path, default=ROOT / "analysis" / "reference" / "minatar_random_scores.csv")
    args = parser.parse_args(argv)
    if args.episodes < 2:
        print(f"minatar_random_scores: error: --episodes {args.episodes}: need at least 2", file=sys.stderr)
        return 2
    commit = git_commit()
    rows = []
    for game in GAMES:
        env_id = f"MinAtar/{game}-v0"
        returns = np.array(random_returns(env_id, args.episodes))
        rows.append({"env": env_id, "random": round(float(returns.mean()), 4),
                     "sem": round(float(returns.std(ddof=1) / np.sqrt(len(returns))), 4),
                     "episodes": len(returns), "games_seeds": f"0-{MEMBERS - 1}", "policy_seed": POLICY_SEED,
                     "protocol": "minatar (sticky 0.1, ramping, all 6 actions, no cap)",
                     "minatar": version("minatar"),
                     "commit": commit.get("commit", "unknown") + (" (dirty)" if commit.get("dirty") else "")})
        print(f"{env_id}: {rows[-1]['random']} +- {rows[-1]['sem']} over {len(returns)} games")
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"minatar_random_scores: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
