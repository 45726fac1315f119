"""The training loop takes a BatchStream (WebDataset shards) and resumes it exactly."""
from __future__ import annotations

import copy

import pytest
import torch

from core.data.webdataset import WebDatasetStream
from core.train import Callbacks, TrainConfig, train
from tests.core.tiny import build_tiny
from tests.datasets.make import shards


class Recorder(Callbacks):
    def __init__(self, keep_at: int | None = None):
        self.losses, self.keep_at, self.kept = {}, keep_at, None

    def on_log(self, step, logs):
        self.losses[step] = logs["loss"]

    def on_checkpoint(self, step, state, final):
        if step == self.keep_at:
            self.kept = copy.deepcopy(state)


def test_streamed_training_resumes_like_the_uninterrupted_run(tmp_path):
    stream = WebDatasetStream([str(p) for p in shards(tmp_path, n_shards=2, per_shard=24)], image_size=16,
                              channels=1, shuffle_buffer=10)
    config = TrainConfig(steps=4, batch_size=16, log_every=1, checkpoint_every=2, seed=1)
    whole = Recorder(keep_at=2)
    straight = build_tiny("simclr")
    assert train(straight, stream, config, callbacks=whole).reason == "completed"
    resumed, second = build_tiny("simclr", seed=5), Recorder()
    train(resumed, stream, config, callbacks=second, resume=whole.kept)
    for step in (3, 4):
        assert second.losses[step] == pytest.approx(whole.losses[step], rel=1e-5, abs=1e-6)
    for key, value in straight.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)
