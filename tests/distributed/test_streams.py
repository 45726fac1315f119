"""Streamed datasets under several ranks: shards split by rank, or the global batch sliced."""
from __future__ import annotations

import torch

from core.data.webdataset import WebDatasetStream
from tests.datasets.make import shards


def epoch_of(stream: WebDatasetStream, batch: int, steps: int, **rank) -> torch.Tensor:
    it = stream.batches(batch, seed=4, start_step=0, **rank)
    return torch.cat([next(it) for _ in range(steps)])


def test_enough_shards_are_split_by_rank(tmp_path):
    paths = [str(p) for p in shards(tmp_path, n_shards=4, per_shard=12)]
    stream = WebDatasetStream(paths, image_size=16, channels=1, shuffle_buffer=5)
    ranks = [epoch_of(stream, 6, 4, rank=r, world=2) for r in (0, 1)]  # 24 samples each: one epoch of its shards
    own = [WebDatasetStream(paths[r::2], image_size=16, channels=1) for r in (0, 1)]
    for r in (0, 1):  # rank r holds exactly the images of shards r and r + 2
        expected = sorted(bytes(x.numpy()) for x in epoch_of(own[r], 6, 4))
        assert sorted(bytes(x.numpy()) for x in ranks[r]) == expected
    assert not {bytes(x.numpy()) for x in ranks[0]} & {bytes(x.numpy()) for x in ranks[1]}
    resumed = stream.batches(6, seed=4, start_step=2, rank=1, world=2)
    assert torch.equal(next(resumed), ranks[1][12:18])  # exact resume at the same world size


def test_fewer_shards_slice_the_global_batch(tmp_path):
    stream = WebDatasetStream([str(p) for p in shards(tmp_path, n_shards=1, per_shard=30)], image_size=16,
                              channels=1, shuffle_buffer=5)
    whole = epoch_of(stream, 8, 3)
    halves = [epoch_of(stream, 4, 3, rank=r, world=2) for r in (0, 1)]
    for step in range(3):
        rows = torch.cat([halves[0][step * 4:(step + 1) * 4], halves[1][step * 4:(step + 1) * 4]])
        assert torch.equal(rows, whole[step * 8:(step + 1) * 8])


def test_ranks_get_the_global_dataset_indices(tmp_path):
    """Split by shard or slicing the global batch, a rank's indices are those of the whole shard
    listing: together the ranks cover every index once per epoch, each with its own image."""
    from core.data.webdataset import head_sample

    for n_shards, per_shard in ((4, 12), (1, 48)):
        folder = tmp_path / str(n_shards)
        folder.mkdir()
        paths = [str(p) for p in shards(folder, n_shards=n_shards, per_shard=per_shard)]
        stream = WebDatasetStream(paths, image_size=16, channels=1, shuffle_buffer=5)
        in_order = head_sample(WebDatasetStream(paths, image_size=16, channels=1), 48).images
        seen = []
        for rank in (0, 1):
            it = stream.batches(6, seed=4, start_step=0, rank=rank, world=2, with_indices=True)
            for _ in range(4):
                images, indices = next(it)
                assert torch.equal(images, in_order[indices])
                seen.append(indices)
        assert sorted(torch.cat(seen).tolist()) == list(range(48))
