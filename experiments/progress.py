"""What a person watching a run sees: progress, one process per run folder, clean stops on signals.

- ``Progress``: on a terminal, one line rewritten in place (a bar of agent steps done, steps/s, time left,
  the median over members of the last evaluation return); without a terminal (Snakemake job logs, SLURM), the
  same fields as a plain line every ``interval`` seconds.
- ``RunLock``: an advisory lock (flock) on DIR/.lock held for the run's life. The kernel releases it on any
  exit, kill -9 included, so a stale lock file never blocks a later run; a second process on the same folder
  learns the holder's PID from the file and exits at once.
- ``StopSignals``: SIGINT and SIGTERM (Ctrl-C, SLURM's preemption) ask the run to stop after the current agent
  step; a second signal ends the process at once.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TextIO

from experiments.contract import EXIT_LOCKED  # noqa: F401 - the status a locked folder gives


class Progress:
    """Agent steps of the total, steps/s, time left and the last evaluation's median return."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, interval: float = 30.0,
                 tty: bool | None = None):
        self.total, self.label = total, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = 0.5 if self.tty else interval
        self.t0 = self.last = time.monotonic()
        self.start_step: int | None = None
        self.eval_return: float | None = None

    def evaluation(self, returns: list[float]) -> None:
        finite = [r for r in returns if not math.isnan(r)]
        if finite:
            self.eval_return = statistics.median(finite)

    def update(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.start_step is None:
            self.start_step, self.t0 = step, now
        if not force and now - self.last < self.interval:
            return
        self.last = now
        self.stream.write(self.line(step, now) + ("\r" if self.tty and step < self.total else "\n"))
        self.stream.flush()

    def line(self, step: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        done = max(step - (self.start_step or 0), 0)
        sps = done / max(now - self.t0, 1e-9)
        left = (self.total - step) / sps if sps > 0 else math.inf
        ret = "-" if self.eval_return is None else f"{self.eval_return:.4g}"
        fields = (f"{step:,}/{self.total:,} agent steps ({100 * step / self.total:.0f}%), {sps:,.0f} steps/s, "
                  f"{_duration(left)} left, eval return (median over members) {ret}")
        if self.tty:
            width = 24
            full = int(width * step / self.total)
            return f"\x1b[2K{self.label} [{'#' * full}{'.' * (width - full)}] {fields}"
        return f"qrepro: {self.label}: {fields}"


def _duration(seconds: float) -> str:
    if math.isinf(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class FolderLocked(Exception):
    """Another live process holds the run folder."""


class RunLock:
    """An exclusive advisory lock on DIR/.lock with the holder's PID written in it."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.fd: int | None = None

    @staticmethod
    def holder(folder: Path) -> str:
        try:
            return (folder / ".lock").read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def check_free(self) -> None:
        """Raise FolderLocked if a live process holds the folder; creates and writes nothing."""
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise FolderLocked(f"{self.path.parent} is in use by another qrepro process (PID "
                               f"{self.holder(self.path.parent)}); wait for it or stop it, then rerun") from None
        finally:
            os.close(fd)

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderLocked(f"{self.path.parent} is in use by another qrepro process (PID "
                               f"{self.holder(self.path.parent)}); wait for it or stop it, then rerun") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class StopSignals:
    """Within the context, the first SIGINT or SIGTERM sets ``received``; the handlers then revert to the
    defaults, so a second signal ends the process at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signum
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)

    def __enter__(self) -> StopSignals:
        for s in self.SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def exit_status(self) -> int:
        """The conventional status of a process ended by the signal: 128 + its number (130, 143)."""
        return 128 + int(self.received)
