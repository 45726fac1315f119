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


def test_deepcluster_on_a_stream_keys_each_image_by_its_dataset_index(tmp_path):
    """The stream yields each image with its index in the shard listing, the same in both epochs;
    DeepCluster-v2 gets them, its bank holds the dataset, and after the first epoch's k-means every
    image takes the label of its own slot."""
    from core.data.webdataset import head_sample
    from core.methods import build
    from tests.core.tiny import TINY_CNN

    paths = [str(p) for p in shards(tmp_path, n_shards=2, per_shard=24)]
    from core.data.webdataset import local_opener, scan_shards

    counts = scan_shards(paths, local_opener, None, 10**6)["stats"]["shard_items"]
    assert counts == [24, 24]  # the scan records them: the stream then counts nothing
    stream = WebDatasetStream(paths, image_size=16, channels=1, shuffle_buffer=10, shard_items=counts)
    assert stream.n_items == 48
    in_order = head_sample(WebDatasetStream(paths, image_size=16, channels=1), 48).images  # listing order
    torch.manual_seed(0)
    method = build("deepcluster_v2", backbone="small_cnn", in_channels=1, image_size=16, mean=[0.3], std=[0.35],
                   backbone_options=TINY_CNN, proj_hidden_dim=32, proj_dim=16, num_prototypes=6, num_heads=2,
                   queue_size=48, cluster_every_steps=3)
    seen, logs = [], {}
    step = method.training_step

    def recording_step(images, gen, at, total, indices=None):
        seen.append((images.clone(), None if indices is None else indices.clone()))
        return step(images, gen, at, total, indices=indices)

    method.training_step = recording_step

    class Logs(Callbacks):
        def on_log(self, at, values):
            logs[at] = values

    result = train(method, stream, TrainConfig(steps=6, batch_size=16, log_every=1, seed=3), callbacks=Logs())
    assert result.reason == "completed" and all(indices is not None for _, indices in seen)
    for epoch in (seen[:3], seen[3:]):
        assert sorted(torch.cat([indices for _, indices in epoch]).tolist()) == list(range(48))
    for images, indices in seen:  # each index is its own image in every epoch
        assert torch.equal(images, in_order[indices])
    assert method.memory.size == 48 and int(method.memory.occupied().sum()) == 48
    assert logs[4]["reclustered"] == 1.0  # k-means at the second epoch's start ...
    assert all(logs[s]["own_label_fraction"] == 1.0 for s in (4, 5, 6))  # ... then every image has its own label
