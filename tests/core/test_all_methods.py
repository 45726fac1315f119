"""Contracts every registered method keeps: it trains on real data without collapsing, and a
run resumed from a checkpoint replays the uninterrupted run exactly."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from core.methods import method_info, method_names
from core.train import Callbacks, TrainConfig, train
from tests.core.tiny import build_tiny, digits_16

IMAGE_METHODS = [n for n in method_names() if method_info(n).modality == "image"]


class Recorder(Callbacks):
    def __init__(self, keep_at: int | None = None):
        self.losses: dict[int, float] = {}
        self.keep_at, self.kept = keep_at, None

    def on_log(self, step, logs):
        self.losses[step] = logs["loss"]

    def on_checkpoint(self, step, state, final):
        if step == self.keep_at:
            self.kept = copy.deepcopy(state)


def config(steps: int, **overrides) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=32, lr=overrides.pop("lr", 2e-3), log_every=1, seed=0, **overrides)


def embedding_std(method, images: torch.Tensor) -> float:
    """Mean per-dimension std of L2-normalised downstream features, times sqrt(dim): about 1 for
    features spread over the sphere, 0 for a collapsed encoder."""
    encoder = method.downstream_encoder().eval()
    with torch.no_grad():
        z = F.normalize(encoder(method.views.plain(images)), dim=1)
    return float(z.std(0).mean() * z.shape[1] ** 0.5)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_trains_on_real_data_without_collapse(name):
    images, _ = digits_16(512)
    method = build_tiny(name)
    initial_spread = embedding_std(method, images[:256])
    recorder = Recorder()
    result = train(method, images, config(40), callbacks=recorder)
    losses = torch.tensor([recorder.losses[s] for s in sorted(recorder.losses)])
    assert result.reason == "completed"
    assert torch.isfinite(losses).all()
    assert losses[-10:].mean() < losses[:10].mean(), f"{name} loss did not decrease: {losses.tolist()}"
    # Collapse drives the spread to 0; MAE legitimately shrinks it (a large shared component,
    # which is why its paper's linear probe starts with a BatchNorm), so the floor is relative.
    spread = embedding_std(method, images[:256])
    assert spread > max(0.01, 0.1 * initial_spread), f"{name} embeddings collapsed: {initial_spread:.3f} -> {spread:.3f}"


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_resume_replays_the_uninterrupted_run(name):
    images, _ = digits_16(256)
    whole = Recorder(keep_at=3)
    cfg = config(6, checkpoint_every=3)
    straight = build_tiny(name)
    train(straight, images, cfg, callbacks=whole)
    assert whole.kept is not None, "no checkpoint at step 3"

    resumed = build_tiny(name, seed=123)  # different init: everything must come from the state
    second = Recorder()
    train(resumed, images, cfg, callbacks=second, resume=whole.kept)
    for step in (4, 5, 6):
        assert second.losses[step] == pytest.approx(whole.losses[step], rel=1e-5, abs=1e-6), name
    for key, value in straight.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(resumed.state_dict()[key], value), key
