"""van Hasselt, Guez, Silver 2016, Figs. 1-2: how far the max over estimated action values lies above the true
value, for the single (max) estimator of Q-learning and the double estimator of Double Q-learning.

No training: each experiment is computed from its definition, so the numbers are exact up to Monte Carlo error
over ``repetitions``. The output is a run folder in the layout of the run contract (DESIGN.md): metrics.csv with
the tidy columns plus ``num_actions``, and run.json with the resolved settings, their hash, git commit, package
versions, device, wall time and status, so the analysis and the provenance table treat it like any run.

All true action values are equal, Q*(s, a) = V*(s), so every upward deviation of an estimate is bias.

Experiments (the ``env`` column):
- ``synthetic/noise-normal``: Q(s, a) = V*(s) + e_a with e_a independent standard normal; the double estimator
  evaluates the argmax of Q with an independent second set Q' (Fig. 1).
- ``synthetic/noise-uniform``: e_a uniform in [-1, 1], where E[max_a Q - V*] = (m - 1) / (m + 1) exactly
  (Theorem 2).
- ``synthetic/fit-sin-deg6``, ``synthetic/fit-gauss-deg6``, ``synthetic/fit-gauss-deg9``: Fig. 2. States are
  continuous in [-6, 6]; V*(s) = sin(s) or 2 exp(-s^2). Each action's estimate is a least-squares polynomial of
  degree 6 or 9 through the true values at the integer states -6..6 minus two interior ones, the two left out
  drawn at random per action (the paper leaves out a different few per action without giving the rule; ours is
  random). The double estimator uses a second, independent draw of sampled states per action. Bias is
  averaged over ``grid_points`` evenly spaced states.

Rows: algo ``max_estimator`` or ``double_estimator``; metric ``estimation_bias`` (noise experiments) or
``fit_estimation_bias`` (fit experiments), each seed's mean over ``repetitions`` independent draws; metric
``exact_bias`` (noise experiments: the closed form or numerical integral, the same for every seed). ``step``
holds the number of repetitions averaged; ``frames`` and ``episodes`` are 0.

Usage (the workflow's synthetic rule runs exactly this):
    python experiments/scripts/synthetic_overestimation.py --env synthetic/noise-normal --seeds 0 1 \
        --out DIR --set repetitions=10000 --set num_actions=2,4,8
Bad input exits with status 2 and one message naming the key and the valid choices, and writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import contract
from experiments.contract import EXIT_BAD_INPUT

METRIC_COLUMNS = contract.COLUMNS
PROTOCOL = "exact"
ALGO_LABEL = "estimators"

NOISE = {"synthetic/noise-normal": "normal", "synthetic/noise-uniform": "uniform"}
FIT = {
    # van Hasselt et al. 2016, Fig. 2 rows: (true function, polynomial degree)
    "synthetic/fit-sin-deg6": ("sin", 6),
    "synthetic/fit-gauss-deg6": ("gauss", 6),
    "synthetic/fit-gauss-deg9": ("gauss", 9),
}
EXPERIMENTS = (*NOISE, *FIT)
SAMPLED_STATES = np.arange(-6, 7)  # van Hasselt et al. 2016, Fig. 2: integer states in [-6, 6]
LEFT_OUT = 2  # sampled states left out per action (ours: the paper leaves out a few without giving the rule)
STATE_RANGE = (-6.0, 6.0)

# Defaults of the settings; van Hasselt et al. 2016 average 100 repetitions over 2..1024 actions (Fig. 1).
# Ours: 10,000 repetitions, so the Monte Carlo error is far below the effects the claims test.
DEFAULTS = {
    "suite": "overestimation_synthetic",
    "repetitions": 10_000,
    "num_actions": [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024],
    "grid_points": 241,
}
TYPES = {"suite": str, "repetitions": int, "num_actions": list, "grid_points": int}


def true_value(kind: str, s: np.ndarray) -> np.ndarray:
    return np.sin(s) if kind == "sin" else 2.0 * np.exp(-s**2)


def parse_settings(sets: Sequence[str]) -> tuple[dict, list[str]]:
    """--set key=value pairs -> settings (defaults filled) and the problems found, each naming its key."""
    settings, errors = dict(DEFAULTS), []
    for item in sets:
        if "=" not in item:
            errors.append(f"--set {item!r}: expected key=value")
            continue
        key, raw = item.split("=", 1)
        if key not in TYPES:
            errors.append(f"--set {key}: unknown key; valid: {', '.join(sorted(TYPES))}")
            continue
        try:
            if TYPES[key] is list:
                settings[key] = [int(v) for v in raw.strip("[]").split(",") if v.strip()]
            else:
                settings[key] = TYPES[key](raw.replace("_", "") if TYPES[key] is int else raw)
        except ValueError:
            errors.append(f"--set {key}={raw}: expected {TYPES[key].__name__}")
    if isinstance(settings["repetitions"], int) and settings["repetitions"] < 1:
        errors.append(f"--set repetitions={settings['repetitions']}: must be >= 1")
    if isinstance(settings["grid_points"], int) and settings["grid_points"] < 2:
        errors.append(f"--set grid_points={settings['grid_points']}: must be >= 2")
    actions = settings["num_actions"]
    if not actions or min(actions) < 2 or len(set(actions)) != len(actions):
        errors.append(f"--set num_actions={actions}: give distinct action counts, each >= 2")
    return settings, errors


def validate(env: str, seeds: Sequence[int], sets: Sequence[str]) -> list[str]:
    """Every problem with a request, each naming the key and the valid choices (empty when fine)."""
    errors = []
    if env not in EXPERIMENTS:
        errors.append(f"--env {env!r}: unknown experiment; valid: {', '.join(EXPERIMENTS)}")
    if not seeds:
        errors.append("--seeds: give at least one seed")
    elif len(set(seeds)) != len(seeds) or min(seeds) < 0:
        errors.append(f"--seeds {list(seeds)}: seeds must be distinct and >= 0")
    return errors + parse_settings(sets)[1]


def rng_for(seed: int, env: str, num_actions: int, stream: str) -> np.random.Generator:
    """Each (seed, experiment, action count, stream) draws from its own stream: results for one action count
    do not depend on which other counts are computed beside it."""
    key = [seed, zlib.crc32(env.encode()), num_actions, zlib.crc32(stream.encode())]
    return np.random.default_rng(np.random.SeedSequence(key))


def noise_bias(noise: str, num_actions: int, repetitions: int, seed: int, env: str) -> tuple[float, float]:
    """Mean bias of the max and the double estimator over ``repetitions`` draws (V* = 0)."""
    rng = rng_for(seed, env, num_actions, "noise")
    chunk = max(1, 2_000_000 // num_actions)  # bounds memory at m = 1024
    total_max = total_double = 0.0
    for start in range(0, repetitions, chunk):
        n = min(chunk, repetitions - start)
        if noise == "normal":
            q, q2 = rng.standard_normal((n, num_actions)), rng.standard_normal((n, num_actions))
        else:
            q, q2 = rng.uniform(-1.0, 1.0, (n, num_actions)), rng.uniform(-1.0, 1.0, (n, num_actions))
        best = q.argmax(axis=1)
        total_max += q[np.arange(n), best].sum()
        total_double += q2[np.arange(n), best].sum()
    return total_max / repetitions, total_double / repetitions


def exact_max_bias(noise: str, num_actions: int) -> float:
    """E[max_a e_a] for m independent errors: (m - 1) / (m + 1) for uniform [-1, 1] (van Hasselt et al. 2016,
    Theorem 2); for standard normal errors the integral of x m phi(x) Phi(x)^(m - 1), computed numerically."""
    if noise == "uniform":
        return (num_actions - 1) / (num_actions + 1)
    from scipy.stats import norm

    x = np.linspace(-12.0, 12.0, 48_001)
    density = num_actions * norm.pdf(x) * norm.cdf(x) ** (num_actions - 1)
    return float(np.trapezoid(x * density, x))


def fit_table(kind: str, degree: int, grid: np.ndarray) -> np.ndarray:
    """Every possible estimate of one action: [patterns, grid], one row per choice of left-out states."""
    # Only interior states are left out, so every fit interpolates over all of [-6, 6].
    patterns = list(itertools.combinations(range(1, len(SAMPLED_STATES) - 1), LEFT_OUT))
    rows = []
    for left_out in patterns:
        states = np.delete(SAMPLED_STATES, left_out).astype(float)
        coefficients = np.polynomial.polynomial.polyfit(states, true_value(kind, states), degree)
        rows.append(np.polynomial.polynomial.polyval(grid, coefficients))
    return np.asarray(rows)


def fit_bias(estimates: np.ndarray, truth: np.ndarray, num_actions: int, repetitions: int, seed: int,
             env: str) -> tuple[float, float]:
    """Mean over repetitions and states of max_a Q(s, a) - V*(s) and of Q'(s, argmax_a Q(s, a)) - V*(s), where
    each action's Q and Q' are fits through independently drawn sampled states."""
    rng = rng_for(seed, env, num_actions, "fit")
    patterns = len(estimates)
    total_max = total_double = 0.0
    chunk = max(1, 20_000_000 // (num_actions * estimates.shape[1]))  # bounds memory near 160 MB
    for start in range(0, repetitions, chunk):
        n = min(chunk, repetitions - start)
        first = rng.integers(patterns, size=(n, num_actions))
        second = rng.integers(patterns, size=(n, num_actions))
        q = estimates[first]  # [n, m, grid]
        best = q.argmax(axis=1)  # [n, grid]
        q_max = np.take_along_axis(q, best[:, None, :], axis=1)[:, 0]
        q_double = np.take_along_axis(estimates[second], best[:, None, :], axis=1)[:, 0]
        total_max += (q_max - truth).mean(axis=1).sum()
        total_double += (q_double - truth).mean(axis=1).sum()
    return total_max / repetitions, total_double / repetitions


def compute_rows(env: str, seeds: Sequence[int], settings: dict, run_id: str) -> pd.DataFrame:
    repetitions, suite = settings["repetitions"], settings["suite"]
    rows = []

    def row(algo, seed, metric, value, num_actions):
        rows.append((run_id, suite, algo, env, PROTOCOL, seed, repetitions, 0, 0, metric, float(value),
                     num_actions))

    if env in NOISE:
        noise = NOISE[env]
        for m in settings["num_actions"]:
            exact = exact_max_bias(noise, m)
            for seed in seeds:
                biased, double = noise_bias(noise, m, repetitions, seed, env)
                row("max_estimator", seed, "estimation_bias", biased, m)
                row("double_estimator", seed, "estimation_bias", double, m)
                row("max_estimator", seed, "exact_bias", exact, m)
                # Q' is independent of the argmax of Q and has mean V*: the double estimator is unbiased here.
                row("double_estimator", seed, "exact_bias", 0.0, m)
    else:
        kind, degree = FIT[env]
        grid = np.linspace(*STATE_RANGE, settings["grid_points"])
        estimates, truth = fit_table(kind, degree, grid), true_value(kind, grid)
        for m in settings["num_actions"]:
            for seed in seeds:
                biased, double = fit_bias(estimates, truth, m, repetitions, seed, env)
                row("max_estimator", seed, "fit_estimation_bias", biased, m)
                row("double_estimator", seed, "fit_estimation_bias", double, m)
    return pd.DataFrame(rows, columns=[*METRIC_COLUMNS, "num_actions"])


def experiment_definition(env: str) -> dict:
    if env in NOISE:
        return {"errors": NOISE[env], "true_value": 0.0}
    kind, degree = FIT[env]
    return {"true_function": kind, "degree": degree, "sampled_states": SAMPLED_STATES.tolist(),
            "left_out_per_action": LEFT_OUT, "state_range": list(STATE_RANGE)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", required=True, help=f"experiment; one of: {', '.join(EXPERIMENTS)}")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="independent repetitions of the experiment")
    p.add_argument("--out", type=Path, required=True, help="run folder to write (metrics.csv, run.json)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help=f"settings: {', '.join(f'{k} (default {v})' for k, v in DEFAULTS.items())}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    errors = validate(args.env, args.seeds, args.sets)
    if errors:
        print(f"synthetic_overestimation: error: {'; '.join(errors)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from experiments.provenance import device_info, git_commit, versions

    settings = parse_settings(args.sets)[0]
    started, wall0, cpu0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.time(), time.process_time()
    config = {"algo": ALGO_LABEL, "env": args.env, "seeds": list(args.seeds), "steps": settings["repetitions"],
              "device": "cpu", "run": {"suite": settings["suite"], "protocol": PROTOCOL},
              "algo_config": {**{k: v for k, v in settings.items() if k != "suite"},
                              **experiment_definition(args.env)}}
    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    run_id = contract.run_id(ALGO_LABEL, args.env, config_hash)
    metrics = compute_rows(args.env, args.seeds, settings, run_id)
    import torch

    contract.write_metrics(args.out / "metrics.csv", metrics.itertuples(index=False), ["num_actions"])
    meta = {"run_id": run_id, "config": config, "config_hash": config_hash, "git": git_commit(),
            "versions": versions(), "device": device_info(torch.device("cpu")), "protocol": PROTOCOL,
            "started": started, "source": "van Hasselt, Guez, Silver 2016, Figs. 1-2 and Theorem 2"}
    contract.write_run_json(args.out / "run.json", meta, "complete", steps_done=settings["repetitions"],
                            wall_time_s=round(time.time() - wall0, 3),
                            cpu_time_s=round(time.process_time() - cpu0, 3))
    print(f"synthetic_overestimation: complete: {args.out} ({len(metrics)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
