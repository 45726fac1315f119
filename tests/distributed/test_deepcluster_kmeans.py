"""DeepCluster-v2's k-means on 2 gloo ranks: run once (rank 0) and broadcast, so every rank holds
the same centroids and labels even when its copy of the memory bank has drifted by rounding."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core import distributed
from core.losses.deepcluster import spherical_kmeans
from tests.core.tiny import build_tiny
from tests.distributed.ranks import run_ranks

IMAGES = 64


def recluster(drift: float = 0.0) -> dict[str, torch.Tensor]:
    """A tiny DeepCluster-v2 whose bank gets the same 64 unit embeddings on every rank (each rank
    writes its half, gathered), then rank 1's copy drifts by `drift`; one k-means pass. Also the
    centroids this rank's own bank would give (head 0, the same starting draw)."""
    torch.set_num_threads(1)
    method = build_tiny("deepcluster_v2", seed=2)
    views, _, dim = method.memory.embeddings.shape
    anchors = F.normalize(torch.randn(views, IMAGES, dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    local = IMAGES // distributed.world_size()
    mine = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
    method.write_indexed(torch.arange(IMAGES)[mine], anchors[:, mine], step=0)
    if distributed.rank() == 1:
        noise = torch.randn(method.memory.embeddings.shape, generator=torch.Generator().manual_seed(9))
        method.memory.embeddings.copy_(F.normalize(method.memory.embeddings + drift * noise, dim=-1))
    bank = method.memory.embeddings[0, :IMAGES]
    start = torch.randperm(IMAGES, generator=torch.Generator().manual_seed(1))[: method.centroids.shape[1]]
    own, _ = spherical_kmeans(bank, bank[start], method.kmeans_iterations)
    method.recluster(torch.Generator().manual_seed(1))
    return {"centroids": method.centroids, "labels": method.labels, "own": own}


def test_every_rank_takes_rank_0s_centroids(tmp_path):
    r0, r1 = run_ranks(recluster, 2, tmp_path, 0.2)
    assert not torch.allclose(r1["own"], r0["own"])  # rank 1's own k-means would have drifted apart
    assert torch.equal(r0["centroids"], r1["centroids"]) and torch.equal(r0["labels"], r1["labels"])
    alone = recluster()  # rank 0 ran the pass the one process runs on the same bank
    assert torch.equal(r0["centroids"], alone["centroids"]) and torch.equal(r0["labels"], alone["labels"])
    assert torch.equal(r0["centroids"][0], r0["own"])
    assert (r0["labels"][:, :IMAGES] >= 0).all() and (r0["labels"][:, IMAGES:] < 0).all()
