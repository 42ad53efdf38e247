"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (runs where one is: experiments/scripts/bench_device.sh)"))])
def device(request) -> str:
    """Each device a test should hold on: the CPU always, CUDA where this machine has it."""
    return request.param
