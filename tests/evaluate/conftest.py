"""The machine's cores are shared: small-tensor protocols run one thread (OpenMP spin-waits under
contention cost 100x), here and in the worker processes these tests start."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
