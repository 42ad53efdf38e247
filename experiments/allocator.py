"""How a training or benchmark process asks the C allocator for memory: freed memory stays in the process.

glibc's malloc gives memory back to the kernel whenever the free space at the top of its heap exceeds its trim
threshold. By default that threshold follows the largest block freed so far: twice glibc's mmap threshold,
which is at most 32 MiB, so at most 64 MiB. Blocks above 32 MiB are mapped apart and unmapped when freed.
An update that makes and frees tens of MB of tensors can therefore hand that memory back each time. The next
update then page-faults every page in again, and the kernel zeroes each of them. The searched maxima
(continuous_max's sampled_q and cem_q) do exactly that: the target's search runs 5 members x 64 states x 128
actions through 200-unit layers, 31.25 MiB per activation.

Measured with `qrepro bench --algo sampled_q --env Reacher-v5 --members 5 --steps 300`, one thread, 2026-12-05,
on a machine with a training job on each core:
- default: 7.5 million page faults, 13.7 s of system time against 32.1 s of user time, 7.9 agent steps/s per
  member;
- freed memory kept: 0.26 million page faults, 0.5 s of system time, 11.1 steps/s.

A whole training job gains far less, since it faults far fewer pages per step than a short bench does: the
100k-step sampled_q job on Reacher-v5 ran 1.07x faster after this setting than before it (docs/performance.md).

DQN, DDPG and NAF allocate far smaller blocks, and their page faults are the same either way.

``keep_freed_memory`` changes only where blocks come from, never what is computed with them: results are
bit-identical either way. Up to 2 GiB of freed memory stays mapped until the process exits (its resident
size shrinks only when more than that lies free at the top of the heap), which suits a training job. A
process that lives long after its peak would want the default.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Serve every block from the heap and give freed memory back to the system only when more than 2 GiB of
    it lies free at the top of the heap (glibc only).

    Sets mallopt(M_MMAP_MAX, 0) and the largest trim threshold mallopt takes (2**31 - 1 bytes). Large blocks
    still get memory: the heap grows to hold them. It grows for good only where long-lived small blocks split
    the holes that freed large ones leave (experiments/runner.py's PendingMetrics says how the runner avoids
    that).
    Returns whether both settings took effect: False where the C library is not glibc (macOS, musl), and
    then nothing is changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # only glibc has it
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    global _kept
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept


_kept = False


def setting() -> str:
    """This process's allocator setting, as run.json's device record names it."""
    return "glibc, freed memory kept" if _kept else "default"
