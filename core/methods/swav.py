"""SwAV (Caron et al., 2020, arXiv:2006.09882): online clustering by swapped assignments.

Each global crop's prototype scores are turned into balanced codes by Sinkhorn-Knopp; every
other crop (multi-crop: 2 global + small local ones) predicts those codes. For small batches a
queue of past global-crop embeddings joins the Sinkhorn step once it is full; it starts after
`queue_start_frac` of training (epoch 15 of 800 in the paper). Prototypes are kept unit-norm
after every step and get no gradient during the first `freeze_prototypes_frac` of training
(the paper's first epoch)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.heads.prototypes import Prototypes
from core.losses.swav import sinkhorn, swav_loss
from core.methods.base import Method
from core.methods.multicrop import forward_crops, global_crop_count, split_crops
from core.methods.registry import register

# 2x224 crops of scale (0.14, 1) and 6x96 of scale (0.05, 0.14); colour jitter strength 0.8.
SWAV_VIEWS = ViewConfig(
    crops=[CropSpec(count=2, size=1.0, scale=(0.14, 1.0), blur_p=0.5),
           CropSpec(count=6, size=0.5, scale=(0.05, 0.14), blur_p=0.5)],
    brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
)


@register("swav", family="clustering", default_backbone="resnet18", views=SWAV_VIEWS, paper="arXiv:2006.09882",
          optimizer="lars", weight_decay=1e-6)
class SwAV(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128,
                 num_prototypes: int = 3000, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, queue_size: int = 3840, queue_start_frac: float = 0.02,
                 freeze_prototypes_frac: float = 0.01):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        self.prototypes = Prototypes(proj_dim, num_prototypes)
        # one queue per assigned (global) crop; all-zero rows mark a queue still filling
        self.register_buffer("queue", torch.zeros(global_crop_count(views.config), queue_size, proj_dim))
        self.temperature, self.epsilon, self.sinkhorn_iterations = temperature, epsilon, sinkhorn_iterations
        self.queue_start_frac, self.freeze_prototypes_frac = queue_start_frac, freeze_prototypes_frac

    def training_step(self, images, gen, step, total_steps):
        global_crops, local_crops = split_crops(self.views(images, gen))
        embeddings = [F.normalize(z, dim=1) for z in forward_crops(
            lambda x: self.projector(self.backbone(x)), global_crops + local_crops)]
        frozen = step < int(self.freeze_prototypes_frac * total_steps)
        scores = [self.prototypes(z, frozen=frozen) for z in embeddings]
        use_queue = self.queue.shape[1] > 0 and step >= int(self.queue_start_frac * total_steps)
        codes, queue_used = [], 0.0
        with torch.no_grad():
            for i, z in enumerate(embeddings[: len(self.queue)]):
                batch_scores = scores[i].detach()
                if use_queue and bool(self.queue[i, -1].any()):
                    batch_scores = torch.cat([self.queue[i] @ self.prototypes.weight.T, batch_scores])
                    queue_used = 1.0
                codes.append(sinkhorn(batch_scores, self.epsilon, self.sinkhorn_iterations)[-len(z):])
                if use_queue:
                    self.queue[i] = torch.cat([z.float(), self.queue[i]])[: self.queue.shape[1]]
        return swav_loss(scores, codes, self.temperature), {"queue_used": queue_used}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.prototypes.normalize_()

    def parts(self):
        return {"backbone": self.backbone, "heads": torch.nn.ModuleDict(
            {"projector": self.projector, "prototypes": self.prototypes})}
