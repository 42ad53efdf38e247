"""The run contract in one place (DESIGN.md, The run contract): the tidy row, its columns, the run id, the
metrics writer and the exit codes, shared by the deep runner, the tabular runner and the synthetic script."""

from __future__ import annotations

from collections.abc import Iterable
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


def write_metrics(path: Path, rows: Iterable[tuple]) -> None:
    """metrics.csv, written atomically (temporary file, fsync, rename)."""
    import pandas as pd

    from experiments.provenance import atomic_write_text

    atomic_write_text(path, pd.DataFrame(list(rows), columns=list(COLUMNS)).to_csv(index=False))
