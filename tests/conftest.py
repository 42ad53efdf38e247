"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (runs where one is: experiments/scripts/bench_device.sh)"))])
def device(request) -> str:
    """Each device a test should hold on: the CPU always, CUDA where this machine has it."""
    return request.param


@pytest.fixture
def one_thread():
    """torch on one CPU thread for the test, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
