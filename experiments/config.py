"""The typed run configuration: run settings plus the algorithm family's dataclass, built from CLI input.

Every problem is collected into one ``ConfigError`` whose message names the key and the valid choices;
nothing is written before the configuration is known to be valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from typing import Any

from algorithms.registry import VARIANTS, Variant


class ConfigError(ValueError):
    """Bad user input; the CLI prints it and exits with status 2."""


@dataclass
class RunSettings:
    """Settings of the run itself (the runner's, not the algorithm's)."""

    eval_period: int = 0
    """Agent steps between evaluations; 0 = ten evaluations per run."""
    eval_episodes: int = 10
    """Evaluation episodes per member per evaluation (Nature: 30; ours for cost)."""
    eval_max_steps: int = 27_000
    """Budget of agent steps per member for a whole evaluation phase (ours). Each episode's own cap is the
    protocol's: Atari nature 18,000 frames, machado 108,000 (envs/atari.py, EVAL_EPISODE_FRAMES)."""
    checkpoint_period: int = 0
    """Agent steps between checkpoints; 0 = at every evaluation."""
    checkpoint_replay: bool = True
    """Save the replay buffer in checkpoints, so a resumed run is the run it would have been."""
    log_period: int = 1_000
    """Agent steps between logged training metrics (td_loss, steps_per_second)."""
    protocol: str = ""
    """Environment protocol; empty = the environment family's default (Atari: nature)."""
    suite: str = "adhoc"
    """Suite name recorded in every metrics row."""
    threads: int = 0
    """torch CPU threads; 0 = torch's default."""


@dataclass
class RunConfig:
    algo: str
    env: str
    seeds: list[int]
    steps: int
    device: str = "cpu"
    run: RunSettings = field(default_factory=RunSettings)
    algo_config: Any = None

    def as_dict(self) -> dict:
        return {"algo": self.algo, "env": self.env, "seeds": list(self.seeds), "steps": self.steps,
                "device": self.device, "run": dataclasses.asdict(self.run),
                "algo_config": dataclasses.asdict(self.algo_config)}

    def hash(self) -> str:
        """Identity of the experiment: everything that changes results (not the device)."""
        d = self.as_dict()
        d.pop("device")
        for k in ("threads", "log_period", "checkpoint_period", "checkpoint_replay"):
            d["run"].pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def family_module(variant: Variant):
    return importlib.import_module(f"algorithms.{variant.family}")


def _parse(value: str, type_name: str, key: str):
    t = type_name.replace(" ", "")
    try:
        if t == "bool":
            low = value.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if t == "int":
            return int(value.replace("_", ""))
        if t == "float":
            return float(value)
        if t == "str":
            return value
        if t in ("list[int]", "list[float]"):
            conv = int if t == "list[int]" else float
            return [conv(v) for v in value.strip("[]").split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--set {key}={value}: expected {type_name}") from None
    raise ConfigError(f"--set {key}: unsupported type {type_name}")


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def build(algo: str, env: str, seeds: list[int], steps: int, sets: list[str], device: str = "cpu") -> RunConfig:
    """Resolve a run's configuration: variant flags, then the env family preset, then --set overrides."""
    from envs.registry import EnvError, action_kind, env_family

    errors = []
    if algo not in VARIANTS:
        raise ConfigError(f"unknown algo {algo!r}; valid: {', '.join(sorted(VARIANTS))}")
    variant = VARIANTS[algo]
    try:
        family = env_family(env)
    except EnvError as e:
        raise ConfigError(str(e)) from None
    kind = action_kind(env)
    if variant.actions == "tabular" and family != "toy":
        errors.append(f"algo {algo} is tabular and needs an exact MDP; valid envs: toy/...")
    elif variant.actions != "tabular" and variant.actions != kind:
        errors.append(f"algo {algo} needs {variant.actions} actions but env {env} has {kind} actions")
    if steps <= 0:
        errors.append(f"--steps {steps}: must be > 0")
    if not seeds:
        errors.append("--seeds: give at least one seed")
    elif len(set(seeds)) != len(seeds):
        errors.append(f"--seeds {seeds}: seeds must be distinct")
    elif min(seeds) < 0:
        errors.append(f"--seeds {seeds}: seeds must be >= 0")
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        errors.append(f"--device {device!r}: valid: cpu, cuda, cuda:N, auto")

    mod = family_module(variant)
    cfg = mod.Config() if hasattr(mod, "Config") else None
    values = {**getattr(mod, "PRESETS", {}).get(family, {}), **variant.overrides}
    run_values: dict[str, Any] = {}
    algo_fields, run_fields = _fields(type(cfg)), _fields(RunSettings)
    for item in sets:
        if "=" not in item:
            errors.append(f"--set {item!r}: expected key=value")
            continue
        key, raw = item.split("=", 1)
        if key in algo_fields:
            try:
                values[key] = _parse(raw, str(algo_fields[key].type), key)
            except ConfigError as e:
                errors.append(str(e))
        elif key in run_fields:
            try:
                run_values[key] = _parse(raw, str(run_fields[key].type), key)
            except ConfigError as e:
                errors.append(str(e))
        elif key in getattr(mod, "RENAMED", {}):
            errors.append(f"--set {key}: renamed; use {mod.RENAMED[key]}")
        else:
            errors.append(f"--set {key}: unknown key for {algo}; valid: "
                          f"{', '.join(sorted(algo_fields) + sorted(run_fields))}")
    if errors:
        raise ConfigError("; ".join(errors))
    cfg = dataclasses.replace(cfg, **values)
    errors += mod.validate(cfg)
    if hasattr(mod, "check_env"):  # a family whose needs go beyond the action kind (e.g. a fixed horizon)
        errors += mod.check_env(cfg, env)
    run = dataclasses.replace(RunSettings(), **run_values)
    for key in ("eval_period", "checkpoint_period", "eval_max_steps", "eval_episodes", "log_period", "threads"):
        if getattr(run, key) < 0:
            errors.append(f"--set {key}={getattr(run, key)}: must be >= 0")
    if run.eval_episodes == 0:
        errors.append("--set eval_episodes=0: must be >= 1")
    if run.log_period == 0:
        errors.append("--set log_period=0: must be >= 1")
    if errors:
        raise ConfigError("; ".join(errors))
    return RunConfig(algo, env, list(seeds), steps, device, run, cfg)

