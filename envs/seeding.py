"""Per-member random streams: a seed for each (member seed, stream name), independent of every other stream.

Environments and learners both draw from these streams, so they live here, below both: envs/ never imports
algorithms/, and algorithms/ (members.py re-exports these) imports envs/ only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for one named random stream of one member, independent of every other stream."""
    digest = hashlib.sha256(f"{int(seed)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def torch_generators(seeds: Sequence[int], stream: str, device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One torch.Generator per member for the named stream."""
    gens = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(derive_seed(s, stream))
        gens.append(g)
    return gens


def numpy_generators(seeds: Sequence[int], stream: str) -> list[np.random.Generator]:
    """One numpy Generator per member for the named stream."""
    return [np.random.default_rng(derive_seed(s, stream)) for s in seeds]
