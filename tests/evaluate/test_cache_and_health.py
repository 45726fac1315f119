"""The feature cache is reused (the backbone runs once) and the health monitor flags collapse."""
from __future__ import annotations

import torch
from torch import nn

from jobs.features import feature_key, load_or_compute
from jobs.storage import ArtifactStore
from workers.health import HealthMonitor


def test_second_load_reuses_the_cache_without_computing(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    key = feature_key("ckpt_1", "ds_1", "ab" * 32, "train")
    labels = torch.arange(5)
    calls = []

    def compute():
        calls.append(1)
        return torch.randn(5, 3, generator=torch.Generator().manual_seed(len(calls)))

    first, cached = load_or_compute(store, key, compute, labels)
    assert not cached and len(calls) == 1 and store.exists(key)
    second, cached = load_or_compute(store, key, compute, labels)
    assert cached and len(calls) == 1 and torch.equal(first, second)
    _, cached = load_or_compute(store, key, compute, torch.arange(5).flip(0))  # other labels: not these features
    assert not cached and len(calls) == 2
    store.local_path(key).write_bytes(b"torn")
    _, cached = load_or_compute(store, key, compute, labels)
    assert not cached and len(calls) == 3


class FakeContext:
    def __init__(self):
        self.metrics, self.events = [], []

    def log_metrics(self, step, logs, total):
        self.metrics.append((step, logs))

    def event(self, kind, message, **data):
        self.events.append((kind, message, data))


class Constant(nn.Module):
    """An encoder whose output ignores its input: a collapsed representation."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.randn(16))

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 0 * x.flatten(1)[:, :1]


class Method:
    def __init__(self, encoder):
        self.encoder = encoder

    def downstream_encoder(self):
        return self.encoder


def monitor(encoder, stop):
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ctx = FakeContext()
    return ctx, HealthMonitor(ctx, Method(encoder), images, [0.5], [0.25], "cpu", every=2, stop=stop, total=10)


def test_health_metrics_logged_every_n_steps_and_spread_features_pass():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 16)).train()
    ctx, health = monitor(encoder, stop=True)
    assert [health.check(s) for s in range(5)] == [None] * 5
    assert [step for step, _ in ctx.metrics] == [2, 4]
    assert {"health/rankme", "health/std_mean", "health/uniformity"} <= set(ctx.metrics[0][1])
    assert ctx.events == [] and encoder.training  # the encoder is put back in training mode


def test_collapse_writes_one_event_and_stops_only_when_asked():
    ctx, health = monitor(Constant(), stop=False)
    assert health.check(2) is None and health.check(4) is None
    assert [e[0] for e in ctx.events] == ["collapse"] and "collapse at step 2" in ctx.events[0][1]
    ctx, health = monitor(Constant(), stop=True)
    assert health.check(2) == "collapsed"


class StoppingContext(FakeContext):
    def __init__(self, reason):
        super().__init__()
        self.reason = reason

    def stop_reason(self):
        return self.reason


def test_evaluation_stops_between_protocols_when_cancelled():
    from core.data import ArrayDataset
    from workers.evaluate_image import Source, evaluate_source

    images = torch.randint(0, 256, (20, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = ArrayDataset(images, torch.arange(20) % 2)
    row = type("Row", (), {"id": "ds_1", "content_hash": "0" * 64})()
    results, reason = evaluate_source(StoppingContext("cancelled"), Source("raw-pixels", None), row, data, data,
                                      [{"protocol": "knn"}, {"protocol": "linear"}], seed=0, device="cpu")
    assert results == {} and reason == "cancelled"
