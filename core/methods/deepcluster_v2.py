"""DeepCluster-v2 (Caron et al., 2020, arXiv:2006.09882, appendix A; solo-learn's
implementation): spherical k-means over a memory bank of embeddings gives centroids that act as
fixed prototypes; every crop's prototype scores are trained with cross-entropy against the
image's cluster.

The memory bank is indexed by image, as in the official code (facebookresearch/swav
main_deepclusterv2.py), where it is indexed by dataset index and holds the whole dataset. In the
training loop on a tensor dataset the same holds here: the loop passes each image's dataset index
(its slot), fills the bank with a forward-only pass before step 0 (the official `init_memory`,
so the first epoch trains against clusters), and k-means runs at the start of every epoch
(`cluster_every_steps`, one epoch). Each image's target is the k-means label of ITS OWN entry.
A WebDataset stream gives each image's index in its shard listing (no `fill_memory` pass: the bank
fills during the first epoch). Without indices (direct use, or a stream larger than the bank) an
image is identified by a key computed from its raw pixels (core/methods/memory_bank.py), k-means
runs once the bank has been rewritten, and with more images than `queue_size` the least recently
written entries are evicted and such images fall back to their nearest centroid (logged). The bank
holds one embedding per global crop and head h clusters the bank of crop h % G (official
`crops_for_assign`). Bank, keys, labels and centroids are buffers, so resume is exact. On several
processes every rank holds the same (gathered) bank; k-means runs on rank 0 alone and its centroids
and labels are broadcast, so the ranks' prototypes cannot drift apart through rounding."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from core import distributed
from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.deepcluster import UNASSIGNED, deepcluster_loss, nearest_centroid, spherical_kmeans
from core.methods.base import Method
from core.methods.memory_bank import KeyedMemoryBank, image_keys
from core.methods.multicrop import embed_crops, global_crop_count, split_crops
from core.methods.registry import register
from core.methods.recipe import Recipe

log = logging.getLogger(__name__)


SOLO = "solo-learn scripts/pretrain/cifar/deepclusterv2"
OFFICIAL = "facebookresearch/swav scripts/deepclusterv2_800ep_pretrain.sh"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.6, batch_size=256, epochs=1000, warmup_epochs=11, final_lr=6e-4,
        weight_decay=1e-6, eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "num_prototypes": 3000, "num_heads": 3,
                        "temperature": 0.1, "kmeans_iterations": 10},
        # the bank holds the whole dataset, k-means once per epoch (main_deepclusterv2.py)
        dataset_size_options=("queue_size",), period_options={"cluster_every_steps": 1},
        # two 32-px crops, SwAV's colour distortion (s = 1), no blur, no small crops
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.08, 1.0))], jitter_p=0.8, brightness=0.8,
                         contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.6, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": f"{SOLO}.yaml (warmup_epochs 11)",
                 "final_lr": f"{SOLO}.yaml (min_lr 0.0006)", "weight_decay": f"{SOLO}.yaml (1e-6)",
                 "method_options": f"{SOLO}.yaml (proj 2048 -> 128, prototypes 3 x 3000); solo-learn "
                                   "deepclusterv2.py defaults (temperature 0.1, kmeans_iters 10)",
                 "views": f"{SOLO}.sh (jitter 0.8/0.8/0.8/0.2, gaussian_prob 0.0 0.0, 2 crops of 32 px); "
                          "crop scale and p from solo-learn cifar augmentations/symmetric.yaml"},
        notes="No blur, as solo-learn's deepclusterv2.sh (the later symmetric.yaml has p 0.5)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=800, warmup_epochs=10, final_lr=3e-4,
        weight_decay=1e-6, eta=0.001, clip_lr=False, exclude_bias_n_norm=False,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 128, "num_prototypes": 3000, "num_heads": 3,
                        "temperature": 0.1, "kmeans_iterations": 10},
        # the bank holds the whole dataset, k-means once per epoch (main_deepclusterv2.py)
        dataset_size_options=("queue_size",), period_options={"cluster_every_steps": 1},
        # 2 x 224 crops of 14-100 % and 6 x 96 of 5-14 %, colour distortion s = 1, blur p 0.5 on every crop
        views=ViewConfig(crops=[CropSpec(count=2, size=1.0, scale=(0.14, 1.0), blur_p=0.5),
                                CropSpec(count=6, size=96 / 224, scale=(0.05, 0.14), blur_p=0.5)],
                         jitter_p=0.8, brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, grayscale_p=0.2),
        sources={"backbone": f"{OFFICIAL} (--arch resnet50)",
                 "optimizer": "facebookresearch/swav main_deepclusterv2.py (SGD momentum 0.9 in LARC, "
                              "trust_coefficient 0.001, clip False, on every parameter)",
                 "base_lr": f"{OFFICIAL} (--base_lr 4.8 at batch 64 x 64 = 4096, i.e. 0.3 x batch/256)",
                 "batch_size": "256 here; the script's is 4096",
                 "epochs": f"{OFFICIAL} (--epochs 800)", "warmup_epochs": f"{OFFICIAL} (--warmup_epochs 10)",
                 "final_lr": f"{OFFICIAL} (--final_lr 0.0048 = peak / 1000)",
                 "weight_decay": f"{OFFICIAL} (--wd 1e-6)",
                 "method_options": f"{OFFICIAL} (--feat_dim 128, --nmb_prototypes 3000 3000 3000, --temperature "
                                   "0.1); main_deepclusterv2.py (hidden_mlp 2048, nmb_kmeans_iters 10)",
                 "views": f"{OFFICIAL} (--nmb_crops 2 6, --size_crops 224 96, --min/max_scale_crops); swav "
                          "src/multicropdataset.py (colour distortion s = 1 p 0.8, grey 0.2, blur p 0.5, flip)"},
        notes="Batch 256 instead of 4096 (one accelerator): the LR follows the linear rule and the final LR keeps "
              "the script's peak / 1000. The warm-up starts at 0 (the script: --start_warmup 0.3). The 96-px local "
              "crops are 96/224 of the input side. The memory bank holds the dataset (up to 2^21 images), each "
              "image in the slot of its dataset index (a stream's: its place in the shard listing)."),
}


@register("deepcluster_v2", family="clustering", recipes=RECIPES, paper="arXiv:2006.09882")
class DeepClusterV2(Method):
    """`num_heads` prototype sets of `num_prototypes` each (3 x 3000 in the paper); a memory bank
    of `queue_size` images (at least the number of training images, as the official bank holds
    the whole dataset)."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 num_prototypes: int = 3000, num_heads: int = 3, temperature: float = 0.1,
                 queue_size: int = 65536, kmeans_iterations: int = 10, cluster_every_steps: int | None = None):
        super().__init__(backbone, views)
        if num_prototypes > queue_size:
            raise ValueError(f"num_prototypes ({num_prototypes}) must not exceed queue_size ({queue_size})")
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        # no clusters before the first k-means: zero prototypes give the constant loss log K
        # and no gradient, like the official code's memory initialisation pass
        self.register_buffer("centroids", torch.zeros(num_heads, num_prototypes, proj_dim))
        # one bank per global crop, as the official `crops_for_assign` [0, 1]
        self.memory = KeyedMemoryBank(queue_size, global_crop_count(views.config), proj_dim)
        self.register_buffer("labels", torch.full((num_heads, queue_size), UNASSIGNED, dtype=torch.long))
        self.register_buffer("writes", torch.zeros((), dtype=torch.long))  # since the last k-means
        self.register_buffer("rewrites", torch.zeros((), dtype=torch.long))  # of images already in the bank
        self.temperature, self.kmeans_iterations = temperature, kmeans_iterations
        # with dataset indices (the loop's tensor datasets): k-means at the start of every epoch of this
        # many steps, as the official code; without (streams, direct use): once the bank has been rewritten
        self.cluster_every_steps = cluster_every_steps
        self.warned_eviction, self.evicted = False, 0  # evictions since the last check (not state: a warning)

    def accepts_indices(self, n_items: int) -> bool:
        """Whether the loop should pass dataset indices (each image's bank slot) and run
        `fill_memory`: when the bank holds the whole dataset."""
        return n_items <= self.memory.size

    def embed(self, images, gen):
        """Unit embeddings of every crop, and the global crops' detached fp32 anchors (G, B, D)."""
        global_crops, local_crops = split_crops(self.views(images, gen))
        # the projector's batch norm over all crops at once, as the official MultiCrop forward
        embeddings = [F.normalize(z, dim=1) for z in embed_crops(self.backbone, self.projector,
                                                                 global_crops + local_crops)]
        return embeddings, torch.stack([z.detach().float() for z in embeddings[: len(global_crops)]])

    @torch.no_grad()
    def fill_memory(self, batches) -> None:
        """The official `init_memory`: one forward-only pass over the data (batches of (images,
        dataset indices, generator)) fills the bank, then k-means labels it, so that the first
        epoch already trains against clusters."""
        gen = None
        for images, indices, gen in batches:
            _, anchors = self.embed(images, gen)
            self.write_indexed(indices, anchors, step=-1)
        if gen is not None:
            self.recluster(gen)

    @torch.no_grad()
    def write_indexed(self, indices, anchors, step):
        """Store the anchors of the images with these dataset indices in their own slots (gathered
        over the ranks, so every rank's bank agrees)."""
        indices = distributed.gather_detached(indices.to(self.labels.device))
        anchors = distributed.gather_detached(anchors.transpose(0, 1)).transpose(0, 1)
        # the loop passes indices only where the bank holds the dataset (accepts_indices): not checked
        # here, which would read the indices on the host every step
        self.rewrites += self.memory.occupied()[indices].sum()
        self.writes += len(indices)
        self.memory.write_slots(indices, anchors, step)

    def training_step(self, images, gen, step, total_steps, indices=None):
        if indices is not None:
            return self.indexed_step(images, indices, gen, step)
        embeddings, anchors = self.embed(images, gen)
        keys = image_keys(images)
        targets, own = self.assignments(self.memory.lookup(keys), anchors)
        prototypes = self.centroids.clone()  # re-clustering below rewrites the buffer in place
        # every crop predicts its image's cluster; heads averaged (official `train`)
        loss = sum(deepcluster_loss([z @ centroids.T for z in embeddings], target, self.temperature)
                   for centroids, target in zip(prototypes, targets)) / len(prototypes)
        # every rank writes the global batch, so the banks, the k-means and the labels agree across ranks
        self.remember(distributed.gather_detached(keys),
                      distributed.gather_detached(anchors.transpose(0, 1)).transpose(0, 1), step)
        due = self.clustering_due()
        if due:
            self.recluster(gen)
        return loss, {"reclustered": float(due), "own_label_fraction": own.float().mean().detach()}

    def indexed_step(self, images, indices, gen, step):
        """The official loop: k-means at each epoch start (after `fill_memory` for the first), each
        image's target the label of its own slot, then its new embedding written to that slot."""
        if self.cluster_every_steps:
            due = step > 0 and step % self.cluster_every_steps == 0
        else:
            due = self.clustering_due()
        if due:
            self.recluster(gen)
        embeddings, anchors = self.embed(images, gen)
        slots = indices.to(self.labels.device)
        targets, own = self.assignments(torch.where(self.memory.occupied()[slots], slots, -1), anchors)
        loss = sum(deepcluster_loss([z @ centroids.T for z in embeddings], target, self.temperature)
                   for centroids, target in zip(self.centroids.clone(), targets)) / len(self.centroids)
        self.write_indexed(indices, anchors, step)
        return loss, {"reclustered": float(due), "own_label_fraction": own.float().mean().detach()}

    @torch.no_grad()
    def assignments(self, slots, anchors):
        """(targets (heads, B), own (B,) bool). An image with a labelled bank entry takes the
        k-means label of ITS entry (official: `assignments[h][idx]`). One without (no k-means yet,
        or evicted because the dataset outgrew the bank) takes the centroid nearest to the mean of
        its global crops, so training never stalls; `own_label_fraction` logs how many did not."""
        labels = self.labels[:, slots.clamp(min=0)]
        own = (slots >= 0) & (labels[0] != UNASSIGNED)
        nearest = nearest_centroid(F.normalize(anchors.mean(0), dim=1), self.centroids)
        return torch.where(own, labels, nearest), own

    @torch.no_grad()
    def remember(self, keys, anchors, step):
        slots, new, evicted = self.memory.write(keys, anchors, step)
        # a slot taken over keeps no label of its old image (rows of one image agree on `new`)
        self.labels[:, slots] = torch.where(new, UNASSIGNED, self.labels[:, slots])
        self.writes += len(keys)
        self.rewrites += (~new).sum()
        self.evicted = self.evicted + evicted  # read with clustering_due's flag, in the same transfer

    def clustering_due(self) -> bool:
        """Once per pass over the data, as the official code clusters at every epoch start: when
        the bank has taken as many writes as it holds images, and at least one write was to an
        image already in it (the first pass fills the bank, like the official `init_memory`) or
        the bank is full."""
        occupied = self.memory.occupied().sum()
        due = (self.writes >= occupied) & ((self.rewrites > 0) | (occupied == self.memory.size))
        due, evicted = torch.stack([due, torch.as_tensor(self.evicted, device=due.device) > 0]).tolist()  # one read
        self.evicted = 0
        if evicted and not self.warned_eviction:
            self.warned_eviction = True
            log.warning("deepcluster_v2: more images than queue_size=%d; evicted images lose their cluster "
                        "label until re-clustered (raise queue_size to the dataset size)", self.memory.size)
        return due

    @torch.compiler.disable  # once per epoch, data-dependent (nonzero, Lloyd's iterations): kept eager
    @torch.no_grad()
    def recluster(self, gen):
        """k-means per head on the bank of global crop h % G, from centroids drawn among the entries
        (official `cluster_memory`); every entry gets its label, the centroids become the prototypes.
        Run by rank 0, whose centroids and labels every rank takes."""
        filled = torch.nonzero(self.memory.occupied()).squeeze(1)
        if len(filled) < self.centroids.shape[1]:
            raise ValueError(f"deepcluster_v2 has seen {len(filled)} distinct images, fewer than num_prototypes "
                             f"({self.centroids.shape[1]}); lower num_prototypes")
        for head in range(len(self.centroids)):
            bank = self.memory.embeddings[head % len(self.memory.embeddings), filled]
            # drawn on every rank: the step's generator goes on to draw the views, alike on every rank
            start = torch.randperm(len(bank), generator=gen, device=gen.device if gen is not None else bank.device)[
                : self.centroids.shape[1]]
            if distributed.rank() == 0:
                self.centroids[head], assigned = spherical_kmeans(bank, bank[start.to(bank.device)],
                                                                  self.kmeans_iterations)
                self.labels[head].fill_(UNASSIGNED)
                self.labels[head, filled] = assigned
        distributed.broadcast_(self.centroids)
        distributed.broadcast_(self.labels)
        self.writes.zero_()
        self.rewrites.zero_()

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
