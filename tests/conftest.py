"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One intra-op thread while a test trains tiny networks: on a shared 2-core machine more threads make them far
    slower. The caller's setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
