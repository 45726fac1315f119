"""The ranks of a machine share one copy of the training images: one load, one file mapped by all."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

from tests.distributed.ranks import run_ranks
from workers.shared_data import shared_images


def map_images(folder: str) -> dict[str, torch.Tensor]:
    os.environ.update(LOCAL_RANK=str(dist.get_rank()), LOCAL_WORLD_SIZE=str(dist.get_world_size()))

    def load():
        Path(folder, f"loaded-by-{dist.get_rank()}").touch()
        return torch.arange(4 * 3 * 5 * 5, dtype=torch.int64).reshape(4, 3, 5, 5).remainder(251).to(torch.uint8)

    images = shared_images(load, "job_x-1", folder)
    maps = Path("/proc/self/maps").read_text()
    mapped = any("darkmatter-job_x-1.npy" in line for line in maps.splitlines())
    return {"images": images.clone(), "mapped": torch.tensor([mapped])}


def test_one_rank_loads_and_every_rank_maps_the_same_images(tmp_path):
    r0, r1 = run_ranks(map_images, 2, tmp_path / "out", str(tmp_path))
    assert torch.equal(r0["images"], r1["images"]) and r0["images"].shape == (4, 3, 5, 5)
    assert bool(r0["mapped"]) and bool(r1["mapped"])  # both read the one file, not copies of their own
    assert [p.name for p in tmp_path.glob("loaded-by-*")] == ["loaded-by-0"]
    assert not list(tmp_path.glob("darkmatter-*"))  # unlinked once every rank had mapped it


def test_one_process_just_loads(tmp_path):
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    assert shared_images(lambda: images, "job_y-1", tmp_path) is images and not list(tmp_path.iterdir())
