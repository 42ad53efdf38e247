"""Freed memory kept in the process (experiments/allocator.py): the heap is reused, not handed back."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import allocator

ROOT = Path(__file__).resolve().parents[1]

# The workload the setting is for: Q-learning with a uniformly searched max (5 members, 64 states x 128 sampled
# actions per target, 200-unit layers), 100 updates on Pendulum-v1 in a fresh process; prints the page faults
# of the training loop and the allocator setting that run.json's device record names.
PROBE = """
import json, resource, sys
from experiments import allocator
kept = allocator.keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
from experiments.config import build
from experiments.provenance import device_info
from experiments.runner import Runner
cfg = build("sampled_q", "Pendulum-v1", [0, 1, 2, 3, 4], 200, ["learning_starts=100", "threads=1"], "cpu")
runner = Runner(cfg, torch.device("cpu"))
runner.evaluate_enabled = False
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in runner.train(None):
    pass
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"kept": kept, "faults": faults, "malloc": device_info(torch.device("cpu"))["malloc"]}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_kept_freed_memory_stops_the_searched_max_from_faulting_its_memory_in_anew():
    default, kept = probe("default"), probe("keep")
    if not kept["kept"]:
        pytest.skip("the C library is not glibc")
    # measured: 0.73-1.17 million page faults by default (glibc hands the freed top of the heap back after
    # each update, and the next update faults it in again), 33-50 thousand with freed memory kept
    assert kept["faults"] * 5 < default["faults"]
    assert (default["malloc"], kept["malloc"]) == ("default", "glibc, freed memory kept")


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    monkeypatch.setattr(allocator, "_kept", False)
    assert allocator.keep_freed_memory() is False
    assert allocator.setting() == "default"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="getrusage's ru_maxrss units checked on Linux")
def test_peak_memory_counts_memory_the_process_touched():
    # run.json's peak_memory_mb (what a scheduler's memory request must cover): a fresh process that writes a
    # 256 MiB block (mapped apart from the heap, so every page is new) peaks at least 256 MiB above its resident
    # size before it, and the peak stays after the block is freed
    probe = """
import json
import numpy as np
from experiments.provenance import peak_memory_mb
def resident_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
peak_before, resident_before = peak_memory_mb(), resident_mb()
block = np.ones(256 * 2**20, dtype=np.uint8)
del block
print(json.dumps([peak_before, resident_before, peak_memory_mb(), resident_mb()]))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         check=True)
    peak_before, resident_before, peak_after, resident_after = json.loads(out.stdout)
    assert resident_before + 256 - 1 <= peak_after <= peak_before + 256 + 1
    assert resident_after < peak_after - 200  # freed, yet the peak remembers it
