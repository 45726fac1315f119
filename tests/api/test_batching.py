"""Dynamic batching of embedding requests, and the model cache bounded by memory."""
from __future__ import annotations

import threading
from types import SimpleNamespace
import time

import pytest
import torch
from torch import nn

from api.batching import Batcher, DeadlineExceeded
from api.models import ModelCache, model_bytes


def test_concurrent_requests_share_forward_passes_and_get_their_own_rows():
    batcher = Batcher(max_batch=64, max_wait_ms=50)
    seen = []

    def forward(x):
        seen.append(len(x))
        return x * 2 + 1

    inputs = [torch.full((1 + i % 3, 4), float(i)) for i in range(16)]
    results: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.run("ckpt", forward, inputs[i])))
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(inputs):
        assert torch.equal(results[i], x * 2 + 1)  # each caller gets exactly its rows
    assert sum(seen) == sum(len(x) for x in inputs)
    assert len(seen) < 16 and batcher.forwards == len(seen)


def test_models_batch_separately_and_errors_reach_every_caller():
    batcher = Batcher(max_batch=64, max_wait_ms=30)
    errors = []

    def broken(x):
        raise ValueError("bad weights")

    def call():
        try:
            batcher.run("broken", broken, torch.zeros(1, 2))
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    assert torch.equal(batcher.run("other", lambda x: x + 1, torch.zeros(1, 2)), torch.ones(1, 2))
    for t in threads:
        t.join()
    assert errors == ["bad weights"] * 4


def test_a_follower_past_its_deadline_gives_up():
    batcher = Batcher(max_batch=64, max_wait_ms=20)

    def slow(x):
        time.sleep(0.5)
        return x

    leader = threading.Thread(target=lambda: batcher.run("m", slow, torch.zeros(1, 1)))
    leader.start()
    time.sleep(0.005)
    with pytest.raises(DeadlineExceeded):
        batcher.run("m", slow, torch.zeros(1, 1), deadline_s=0.05)
    leader.join()


def test_batching_off_runs_each_request_alone():
    batcher = Batcher(max_batch=1, max_wait_ms=5)
    assert torch.equal(batcher.run("m", lambda x: x * 3, torch.ones(2, 2)), torch.full((2, 2), 3.0))
    assert batcher.forwards == 1


def test_model_cache_is_bounded_by_bytes(monkeypatch):
    small, large = nn.Linear(4, 4), nn.Linear(64, 64)
    loaded = {"small": (small, {}), "large": (large, {}), "small2": (nn.Linear(4, 4), {})}
    cache = ModelCache(max_bytes=model_bytes(large) + model_bytes(small))
    monkeypatch.setattr("api.models.sha256_file", lambda path: "sha")
    monkeypatch.setattr("api.models.load_backbone", lambda path, device="cpu": loaded[path.name])

    class Row:
        def __init__(self, name):
            self.id, self.parts = name, {"backbone": {"key": name, "sha256": "sha"}}

    class Store:
        def local_path(self, key):
            from pathlib import Path
            return Path(key)

    monkeypatch.setattr("api.models.store_for", lambda settings: Store())
    for name in ("small", "large", "small2"):
        cache.get(SimpleNamespace(embedding_device="cpu"), Row(name))
    assert list(cache.models) == ["large", "small2"]  # the least recently used went first
    assert cache.bytes <= cache.max_bytes


def wait_for(condition, seconds: float = 10.0) -> None:
    until = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < until, "condition not reached"
        time.sleep(0.001)


def test_requests_that_arrive_while_the_model_is_busy_share_the_next_pass():
    """Continuous batching: an idle model runs a lone request at once; whatever queues during a
    pass becomes the next pass, led by the oldest waiting request."""
    batcher = Batcher(max_batch=64, max_wait_ms=0)
    release, seen = threading.Event(), []

    def forward(x):
        seen.append(x[:, 0].tolist())
        if len(seen) == 1:
            release.wait(10)
        return x + 1

    results = {}
    first = threading.Thread(target=lambda: results.__setitem__(0, batcher.run("m", forward, torch.zeros(1, 2))))
    first.start()
    wait_for(lambda: len(seen) == 1)  # the lone request ran without waiting for company
    others = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.run(
        "m", forward, torch.full((1, 2), float(i))))) for i in range(1, 11)]
    for t in others:
        t.start()
    wait_for(lambda: len(batcher.pending["m"]) == 10)
    release.set()
    for t in [first, *others]:
        t.join()
    assert seen[0] == [0.0] and sorted(seen[1]) == [float(i) for i in range(1, 11)] and len(seen) == 2
    assert all(torch.equal(results[i], torch.full((1, 2), i + 1.0)) for i in range(11))
    assert "m" not in batcher.pending  # idle again: the next request leads at once


class BusyModel:
    """A batcher whose model is busy: a leader's forward pass blocks until release()."""

    def __init__(self):
        self.batcher = Batcher(max_batch=64, max_wait_ms=0)
        self.gate, self.seen = threading.Event(), []
        self.leader = self.run_in_thread(torch.zeros(1, 1))
        wait_for(lambda: len(self.seen) == 1)

    def forward(self, x):
        self.seen.append(len(x))
        self.gate.wait(10)
        return x

    def run_in_thread(self, x) -> threading.Thread:
        thread = threading.Thread(target=lambda: self.batcher.run("m", self.forward, x))
        thread.start()
        return thread

    def release(self, *threads) -> None:
        self.gate.set()
        for t in (self.leader, *threads):
            t.join()


def test_a_queued_request_past_its_deadline_is_never_computed():
    model = BusyModel()
    with pytest.raises(DeadlineExceeded):
        model.batcher.run("m", model.forward, torch.zeros(3, 1), deadline_s=0.05)
    model.release()
    assert model.seen == [1] and "m" not in model.batcher.pending


def test_a_request_behind_others_in_the_queue_gives_up_cleanly():
    model = BusyModel()
    ahead = model.run_in_thread(torch.ones(2, 1))
    wait_for(lambda: len(model.batcher.pending["m"]) == 1)
    with pytest.raises(DeadlineExceeded):  # queued behind `ahead`: removed without comparing tensors
        model.batcher.run("m", model.forward, torch.zeros(3, 1), deadline_s=0.05)
    model.release(ahead)
    assert model.seen == [1, 2]
