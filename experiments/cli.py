"""The ``qrepro`` command: train (the run contract), keys (every --set key, documented), bench (throughput)."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
import textwrap
import time
import traceback
from pathlib import Path

import torch

from experiments.allocator import keep_freed_memory
from experiments.config import ConfigError, RunConfig, RunSettings, build, family_module
from experiments.contract import (
    EXIT_BAD_INPUT,
    EXIT_LOCKED,
    atomic_torch_save,
    rows_from_plain,
    write_metrics,
    write_run_json,
)
from experiments.progress import FolderLocked, Progress, RunLock, StopSignals
from experiments.provenance import device_info, git_commit, peak_memory_mb, versions


def field_docs(cls) -> dict[str, str]:
    """The docstring written under each dataclass field (CleanRL style), read from the source; a subclass's
    docstring of a field it redeclares wins over its base class's."""
    docs = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls) -> str:
    docs = field_docs(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        lines.append(f"  {f.name} ({f.type}, default {default!r}): {docs.get(f.name, '')}")
    return "\n".join(lines)


def keys_text(algo: str | None = None) -> str:
    from algorithms.registry import VARIANTS

    parts = ["Run settings (--set key=value):", describe(RunSettings)]
    families = {}
    for name, v in VARIANTS.items():
        if algo is None or name == algo:
            families.setdefault(v.family, []).append(name)
    for family, names in families.items():
        mod = family_module(VARIANTS[names[0]])
        parts.append(f"\nAlgorithm settings for {', '.join(names)} ({family}.py):")
        parts.append(describe(mod.Config))
        for n in names:
            v = VARIANTS[n]
            parts.append(f"  variant {n}: {v.overrides or 'the defaults'} ({v.citation})")
        presets = getattr(mod, "PRESETS", {})
        for env_family, values in presets.items():
            parts.append(f"  preset for {env_family} environments: {values}")
    return "\n".join(parts)


def _parser() -> argparse.ArgumentParser:
    from algorithms.registry import VARIANTS

    p = argparse.ArgumentParser(prog="qrepro", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train M members of one algorithm on one environment",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train one algorithm on one environment with one member per seed. Writes "
                       "DIR/metrics.csv, DIR/run.json and DIR/checkpoints/; a DIR holding a checkpoint of the "
                       "same configuration is resumed.",
                       epilog="Every --set key: run `qrepro keys` (or `qrepro keys --algo NAME`).")
    t.add_argument("--algo", required=True, help=f"algorithm variant; one of: {', '.join(sorted(VARIANTS))}")
    t.add_argument("--env", required=True, help="environment id: ALE/<Game>-v5, CartPole-v1, a MuJoCo v5 task, "
                   "or toy/... (`qrepro envs` lists them)")
    t.add_argument("--seeds", type=int, nargs="+", required=True, help="one member per seed (distinct, >= 0)")
    t.add_argument("--steps", type=int, required=True, help="agent steps per member (Atari: 1 step = 4 frames)")
    t.add_argument("--out", required=True, type=Path, help="run folder (created; resumed if it holds a checkpoint)")
    t.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run or algorithm setting (repeatable); see `qrepro keys`")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--progress-seconds", type=float, default=30.0, metavar="S",
                   help="without a terminal (logs, Snakemake, SLURM), one progress line every S seconds "
                   "(default 30); on a terminal the progress bar updates in place")
    k = sub.add_parser("keys", help="list every --set key with its default, meaning and source")
    k.add_argument("--algo", default=None, help="only this algorithm's keys")
    sub.add_parser("envs", help="list environment ids")
    b = sub.add_parser("bench", help="print agent steps/second for M = 1 and M = 8 members side by side")
    b.add_argument("--algo", default="dqn")
    b.add_argument("--env", nargs="+", default=["CartPole-v1", "ALE/Pong-v5"])
    b.add_argument("--members", type=int, nargs="+", default=[1, 8])
    b.add_argument("--steps", type=int, default=2_000, help="timed agent steps per configuration")
    b.add_argument("--device", default="cpu")
    b.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    return p


def error(message: str) -> int:
    print(f"qrepro: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; valid: cpu, auto")
    return dev


def load_checkpoint(path: Path, cfg: RunConfig) -> dict:
    from experiments.runner import CHECKPOINT_FORMAT

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise ConfigError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e}); "
                          "delete it to start over, or give another --out") from None
    if not isinstance(state, dict) or state.get("format") is None:
        raise ConfigError(f"checkpoint {path} is not a qrepro checkpoint; give another --out")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ConfigError(f"checkpoint {path} has format {state['format']}, this qrepro reads format "
                          f"{CHECKPOINT_FORMAT}; resume it with the commit that wrote it (git.commit in run.json), "
                          "or give another --out")
    if state.get("config_hash") != cfg.hash():
        raise ConfigError(f"checkpoint {path} was made with another configuration (hash {state.get('config_hash')}, "
                          f"this run {cfg.hash()}); rerun with the same settings to resume, or give another --out")
    return state


# What a run folder holds before its first checkpoint (run.json from the first step, metrics.csv rewritten by a
# stop signal, an empty checkpoints folder): nothing there can be resumed.
_BEFORE_FIRST_CHECKPOINT = {".lock", "run.json", "metrics.csv", "checkpoints"}


def restart_before_first_checkpoint(out: Path, cfg: RunConfig) -> None:
    """A folder without a checkpoint may hold a run of this very configuration that was killed (SIGKILL, an
    out-of-memory kill, a scheduler's hard limit) before its first checkpoint. Such a run cannot be resumed and
    nothing of it can be kept, so a retry starts it again from step 0 instead of failing on every retry. Anything
    else is refused, and left as it is."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(f"--out {out}: folder is not empty and holds no qrepro checkpoint ({why}); "
                           "give a new folder")

    names = {p.name for p in out.iterdir()}
    if not names <= _BEFORE_FIRST_CHECKPOINT or any((out / "checkpoints").glob("*")):
        raise refuse(f"it holds {', '.join(sorted(names - {'.lock'}))}")
    try:
        meta = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        raise refuse("no readable run.json") from None
    if not isinstance(meta, dict) or meta.get("config_hash") != cfg.hash():
        raise refuse(f"its run.json is of another configuration (hash {meta.get('config_hash')}, this run "
                     f"{cfg.hash()})" if isinstance(meta, dict) else "run.json is not a qrepro run.json")
    # run.json is rewritten only with a checkpoint (or on failure): a run killed before its first one still says
    # running at step 0. Any other status or step means a checkpoint was written and is gone: not ours to redo.
    if meta.get("status") not in ("running", "failed") or meta.get("steps_done", 0) != 0:
        raise refuse(f"its run.json says {meta.get('status')!r} at agent step {meta.get('steps_done')}")
    print(f"qrepro: {out} holds a run of this configuration that stopped ({meta['status']}) before its first "
          "checkpoint; starting it again from step 0", file=sys.stderr)
    (out / "metrics.csv").unlink(missing_ok=True)


def train(args) -> int:
    from algorithms.registry import VARIANTS
    from envs.registry import EnvError
    from experiments.runner import Runner
    from experiments.tabular_runner import TabularRunner

    try:
        cfg = build(args.algo, args.env, args.seeds, args.steps, args.sets, args.device)
        device = resolve_device(args.device)
        out: Path = args.out
        ckpt_path = out / "checkpoints" / "latest.pt"
        state = None
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a folder")
        lock = RunLock(out)
        if out.exists():
            lock.check_free()
        if ckpt_path.exists():
            state = load_checkpoint(ckpt_path, cfg)
            if state["status"] in ("complete", "diverged"):
                print(f"qrepro: {out} already holds a {state['status']} run of this configuration; nothing to do")
                return 0
        elif out.exists() and any(p.name != ".lock" for p in out.iterdir()):
            restart_before_first_checkpoint(out, cfg)
        runner = (TabularRunner if VARIANTS[cfg.algo].actions == "tabular" else Runner)(cfg, device)
    except FolderLocked as e:
        print(f"qrepro: error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except (ConfigError, EnvError) as e:
        return error(str(e))

    out.mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire()  # held until this process exits, however it exits
    except FolderLocked as e:
        print(f"qrepro: error: {e}", file=sys.stderr)
        return EXIT_LOCKED
    if not args.quiet:
        runner.progress = Progress(cfg.steps, f"{cfg.algo} {cfg.env} x{len(cfg.seeds)}",
                                   interval=args.progress_seconds)
    stop = StopSignals()
    runner.stop = stop
    wall0, cpu0 = time.time(), time.process_time()
    prior_wall = float(state.get("wall_time", 0.0)) if state else 0.0
    # CPU time of this process, all its threads: the cost of the run whatever else shared the machine (wall
    # time grows with contention). None when resuming a checkpoint written before it was recorded.
    prior_cpu = state.get("cpu_time") if state else 0.0
    # Peak resident memory: the largest of this process's and, for a resumed run, its earlier processes'. None
    # when resuming a checkpoint written before it was recorded.
    prior_peak = state.get("peak_memory_mb") if state else 0.0
    meta = {"run_id": runner.run_id, "config": cfg.as_dict(), "config_hash": cfg.hash(), "git": git_commit(),
            "versions": versions(), "device": device_info(device), "protocol": runner.protocol,
            "env_settings": getattr(runner.env, "settings", {}), "frames_per_step": runner.env.frames_per_step,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_from_step": state["step"] if state else 0}

    def record(st: dict, status: str) -> None:
        write_metrics(out / "metrics.csv", st["rows"])
        extra = {k: st[k] for k in ("diverged_seeds",) if k in st}
        if st.get("cpu_time") is not None:
            extra["cpu_time_s"] = round(st["cpu_time"], 3)
        if st.get("peak_memory_mb") is not None:  # measured again: the checkpoint's save and the metrics' write
            st["peak_memory_mb"] = extra["peak_memory_mb"] = max(st["peak_memory_mb"], peak_memory_mb() or 0.0)
        write_run_json(out / "run.json", meta, status, steps_done=st["step"],
                       wall_time_s=round(st["wall_time"], 3), **extra)

    if state is None:
        write_run_json(out / "run.json", meta, "running", steps_done=0)
    try:
        with stop:
            for kind, st in runner.train(state):
                # in the checkpoint too, so a resumed run adds to the time spent before it (compute spent)
                st["wall_time"] = prior_wall + time.time() - wall0
                st["cpu_time"] = None if prior_cpu is None else prior_cpu + time.process_time() - cpu0
                peak = peak_memory_mb()
                st["peak_memory_mb"] = None if prior_peak is None or peak is None else max(prior_peak, peak)
                atomic_torch_save(ckpt_path, st)
                record(st, st["status"])
                if kind == "done":
                    if runner.progress is not None:
                        runner.progress.update(st["step"], force=True)
                    print(f"qrepro: {st['status']}: {out} ({st['step']} agent steps x {len(cfg.seeds)} members)")
                if kind == "interrupted":
                    print(f"\nqrepro: interrupted by signal {stop.received} at agent step {st['step']}: checkpoint "
                          f"and metrics written; rerun the same command to resume", file=sys.stderr)
                    return stop.exit_status()
    except Exception as e:
        write_run_json(out / "run.json", meta, "failed", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc())
        raise
    finally:
        runner.env.close()
        lock.release()
    return 0


def bench(args) -> int:
    """Agent steps/second of whole training loops (acting, replay, learning) for each M, side by side."""
    from experiments.runner import Runner

    try:
        device = resolve_device(args.device)
    except ConfigError as e:
        return error(str(e))
    print(f"# qrepro bench: algo {args.algo}, {args.steps} timed agent steps after {args.steps} of warm-up, "
          f"device {device}, settings {args.sets or 'defaults'}")
    print(f"{'env':<22}{'M':>4}{'steps/s per member':>22}{'aggregate steps/s':>20}{'vs M=1':>10}")
    for env in args.env:
        base = None
        for m in args.members:
            # the first half warms up (replay filling, allocator, caches); the second half is timed
            sets = ["learning_starts=100", f"log_period={args.steps}", *args.sets]
            try:
                cfg = build(args.algo, env, list(range(m)), 2 * args.steps, sets, args.device)
            except ConfigError as e:
                return error(str(e))
            runner = Runner(cfg, device)
            runner.evaluate_enabled = False
            *_, (_, final) = runner.train(None)
            runner.env.close()
            per_member = [r.value for r in rows_from_plain(final["rows"]) if r.metric == "steps_per_second"][-1]
            agg = per_member * m
            base = base or agg
            print(f"{env:<22}{m:>4}{per_member:>22.1f}{agg:>20.1f}{agg / base:>9.2f}x", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("train", "bench"):
        # before the run allocates: freed memory stays in the process (experiments/allocator.py says why)
        keep_freed_memory()
    if args.command == "train":
        return train(args)
    if args.command == "keys":
        from algorithms.registry import VARIANTS

        if args.algo is not None and args.algo not in VARIANTS:
            return error(f"unknown algo {args.algo!r}; valid: {', '.join(sorted(VARIANTS))}")
        print(keys_text(args.algo))
        return 0
    if args.command == "envs":
        from envs.registry import known_envs

        print("\n".join(known_envs()))
        return 0
    if args.command == "bench":
        return bench(args)
    return error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())

