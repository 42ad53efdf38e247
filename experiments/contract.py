"""The run contract in one place (DESIGN.md, The run contract): the tidy row, its columns, the run id, the one
atomic writer with the metrics and run.json writers built on it, and the exit codes, shared by the deep runner,
the tabular runner, the synthetic script and the analysis that reads their folders."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple

EXIT_BAD_INPUT = 2  # one clear message naming the key and the valid choices; nothing written
EXIT_LOCKED = 3  # another live process holds the run folder


class Row(NamedTuple):
    """One observation of one member: the tidy metrics row."""

    run_id: str
    suite: str
    algo: str
    env: str
    protocol: str
    seed: int
    step: int  # agent steps
    frames: int  # emulator frames (agent steps x frames per step)
    episodes: int  # episodes the member had finished by then
    metric: str
    value: float


COLUMNS: tuple[str, ...] = Row._fields


def run_id(algo: str, env: str, config_hash: str) -> str:
    """The id every row of a run carries: algorithm, environment (path-safe) and configuration hash."""
    return f"{algo}-{env.replace('/', '_')}-{config_hash}"


def rows_from_plain(rows: Iterable) -> list[Row]:
    """Rows from a checkpoint, where they are plain tuples (torch.load(weights_only=True) takes no classes)."""
    return [Row(*r) for r in rows]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``.

    A reader (or a killed job) sees the old file or the whole new one; the fsync before the rename keeps that
    true across a crash of the machine, where a rename could otherwise reach the disk before the data.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj) -> Path:
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_metrics(path: str | Path, rows: Iterable[tuple], extra_columns: Iterable[str] = ()) -> Path:
    """metrics.csv: the contract's columns in order, then a suite's own (e.g. the synthetic suite's num_actions)."""
    import pandas as pd

    df = pd.DataFrame([tuple(r) for r in rows], columns=[*COLUMNS, *extra_columns])
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))


def write_run_json(path: str | Path, meta: dict, status: str, **fields) -> Path:
    """run.json: the run's provenance (``meta``), its status (running, complete, diverged, interrupted, failed)
    and what that status carries (steps_done, wall_time_s, cpu_time_s,
    peak_memory_mb, diverged_seeds, error)."""
    return atomic_write_json(path, {**meta, "status": status, **fields})
