"""DeepCluster-v2 (Caron et al., 2020, arXiv:2006.09882, appendix A; solo-learn's
implementation): spherical k-means over a memory bank of embeddings gives centroids that act as
fixed prototypes; every crop's prototype scores are trained with cross-entropy against the
image's cluster.

Choice for this library: `training_step` receives only images (no dataset indices), so instead
of a bank indexed by item the memory bank is a ring buffer of the last `queue_size` global-crop
embeddings. Each time the ring has been completely refreshed (one "epoch" of the bank, as the
paper re-clusters once per epoch) k-means runs on it, once per prototype set, from centroids
sampled from the bank. An image's assignment is its nearest centroid, taken from the mean of
its global crops' (detached) embeddings under the current centroids; both global and local
crops predict it. Until the bank is first full there are no clusters: the prototypes are zero,
so the loss is the constant log K and trains nothing (solo-learn's first epoch has no
assignments either). Bank, write position and centroids are buffers, so resume is exact."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.heads import mlp
from core.losses.deepcluster import deepcluster_loss, spherical_kmeans
from core.methods.base import Method
from core.methods.multicrop import forward_crops, split_crops
from core.methods.registry import register
from core.methods.swav import SWAV_VIEWS


@register("deepcluster_v2", family="clustering", default_backbone="resnet18", views=SWAV_VIEWS,
          paper="arXiv:2006.09882", optimizer="lars", weight_decay=1e-6)
class DeepClusterV2(Method):
    """`num_heads` prototype sets of `num_prototypes` each (3 x 3000 in the paper); `queue_size`
    embeddings in the memory bank."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 num_prototypes: int = 3000, num_heads: int = 3, temperature: float = 0.1,
                 queue_size: int = 65536, kmeans_iterations: int = 10):
        super().__init__(backbone, views)
        if num_prototypes > queue_size:
            raise ValueError(f"num_prototypes ({num_prototypes}) must not exceed queue_size ({queue_size})")
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        # no clusters before the bank is first full: zero prototypes give the constant loss log K
        # and no gradient, like solo-learn's first epoch without assignments
        self.register_buffer("centroids", torch.zeros(num_heads, num_prototypes, proj_dim))
        self.register_buffer("bank", torch.zeros(queue_size, proj_dim))
        self.register_buffer("bank_position", torch.zeros((), dtype=torch.long))
        self.temperature, self.kmeans_iterations = temperature, kmeans_iterations

    def training_step(self, images, gen, step, total_steps):
        global_crops, local_crops = split_crops(self.views(images, gen))
        embeddings = [F.normalize(z, dim=1) for z in forward_crops(
            lambda x: self.projector(self.backbone(x)), global_crops + local_crops)]
        anchors = [z.detach().float() for z in embeddings[: len(global_crops)]]
        prototypes = self.centroids.clone()  # re-clustering below rewrites the buffer in place
        with torch.no_grad():
            image_embedding = F.normalize(torch.stack(anchors).mean(0), dim=1)
            assignments = (image_embedding @ prototypes.transpose(1, 2)).argmax(-1)  # (heads, B)
        loss = sum(deepcluster_loss([z @ centroids.T for z in embeddings], target, self.temperature)
                   for centroids, target in zip(prototypes, assignments)) / len(prototypes)
        refreshed = self.remember(torch.cat(anchors))
        if refreshed:
            self.recluster(gen)
        return loss, {"reclustered": float(refreshed)}

    @torch.no_grad()
    def remember(self, embeddings):
        """Write embeddings into the ring buffer; True when the write completed a full pass."""
        size = len(self.bank)
        embeddings = embeddings[-size:]
        position = int(self.bank_position)
        slots = (position + torch.arange(len(embeddings), device=self.bank.device)) % size
        self.bank[slots] = embeddings
        self.bank_position.fill_((position + len(embeddings)) % size)
        return position + len(embeddings) >= size

    @torch.no_grad()
    def recluster(self, gen):
        for head in range(len(self.centroids)):
            start = torch.randperm(len(self.bank), generator=gen, device=gen.device)[: self.centroids.shape[1]]
            self.centroids[head] = spherical_kmeans(self.bank, self.bank[start.to(self.bank.device)],
                                                    self.kmeans_iterations)[0]

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
