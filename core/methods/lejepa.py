"""LeJEPA (Balestriero & LeCun, 2025, arXiv:2511.08544): multi-crop views through one encoder and
an MLP projector; every view's embedding predicts the mean embedding of the global views, and
SIGReg pushes each view's embedding distribution towards an isotropic Gaussian. Loss
(1 - w) * prediction + w * SIGReg with w = sigreg_weight (the paper's lambda), fresh random
slicing directions each step; no EMA teacher, no stop-gradient, no predictor."""
from __future__ import annotations

import torch

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.sigreg import lejepa_loss, random_directions
from core.methods.base import Method
from core.methods.registry import register

# 2 global and 6 local crops with the usual DINO-style distortions (the paper's 224/96 px become
# full-size/half-size crops of the input).
LEJEPA_VIEWS = ViewConfig(crops=[CropSpec(count=2, size=1.0, scale=(0.3, 1.0), blur_p=0.5, solarize_p=0.1),
                                 CropSpec(count=6, size=0.5, scale=(0.05, 0.3), blur_p=0.5)])


@register("lejepa", family="latent-prediction", default_backbone="vit_tiny", views=LEJEPA_VIEWS,
          paper="arXiv:2511.08544", optimizer="adamw", lr=5e-4, weight_decay=0.05)
class LeJEPA(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, num_slices: int = 1024,
                 sigreg_weight: float = 0.05):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.num_slices, self.sigreg_weight = num_slices, sigreg_weight
        self.num_global = views.config.crops[0].count

    def training_step(self, images, gen, step, total_steps):
        views = self.views(images, gen)
        g = self.num_global  # global views first, then local ones: one encoder pass per size
        groups = [torch.cat(views[:g])] + ([torch.cat(views[g:])] if len(views) > g else [])
        z = self.projector(torch.cat([self.backbone(v) for v in groups])).view(len(views), len(images), -1)
        directions = random_directions(z.shape[-1], self.num_slices, gen, z.device)
        loss, pred, reg = lejepa_loss(z.float(), self.num_global, directions, self.sigreg_weight)
        return loss, {"prediction": pred.detach(), "sigreg": reg.detach()}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
