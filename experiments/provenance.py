"""The provenance recorded with every run: commit, package versions, device."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

from experiments import allocator

PACKAGES = ("qrepro", "torch", "numpy", "gymnasium", "ale-py", "mujoco", "pandas", "rliable")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


# Paths whose uncommitted changes do not make a run's code dirty: the workflow itself rewrites the committed
# results/ (tables, figures, report) while other jobs train, and a change there changes no code.
NOT_CODE = ("results",)


def git_commit(root: Path | None = None) -> dict[str, str | bool]:
    """The commit of the qrepro checkout that ran the code (``root``: this package's), and whether its code had
    uncommitted changes (``NOT_CODE`` aside)."""
    root = Path(__file__).resolve().parent.parent if root is None else root
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     *(f":(exclude){path}" for path in NOT_CODE)], cwd=root,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": True}


def device_info(device: torch.device) -> dict[str, str | int]:
    info: dict[str, str | int] = {"device": str(device), "cpu": platform.processor() or platform.machine(),
                                  "cpu_count": os.cpu_count() or 0, "torch_threads": torch.get_num_threads(),
                                  "malloc": allocator.setting()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb() -> float | None:
    """This process's peak resident memory so far in MiB (getrusage's ru_maxrss), None where the platform has
    no such count. What a scheduler's memory request (Snakemake's mem_mb, SLURM's --mem) must cover."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux
