"""Fixtures shared by the core tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add OpenMP barrier waits (seconds on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied around a test that compiles, so frame counts start from nothing."""
    import torch._dynamo

    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
