"""BYOL (Grill et al., 2020, arXiv:2006.07733): an online network predicts an EMA target
network's projection of another view; no negatives."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.byol import normalized_mse
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register

# The paper's table 6: asymmetric blur (1.0 / 0.1) and solarisation (0 / 0.2), crops of 8-100%.
VIEWS = ViewConfig(crops=[CropSpec(count=1, scale=(0.08, 1.0), blur_p=1.0),
                          CropSpec(count=1, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2)],
                   brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_p=0.2)


@register("byol", family="distillation", default_backbone="resnet18", views=VIEWS, paper="arXiv:2006.07733")
class BYOL(Method):
    """`self.backbone` is the online encoder; the target's momentum rises from `momentum` to 1
    on a cosine over the run (sec. 3.2)."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 4096, proj_dim: int = 256, pred_hidden_dim: int = 4096,
                 momentum: float = 0.996):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim)
        self.target_backbone = frozen_copy(backbone)
        self.target_projector = frozen_copy(self.projector)
        self.momentum = momentum

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        p1 = self.predictor(self.projector(self.backbone(v1)))
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_backbone(v1))
            z2 = self.target_projector(self.target_backbone(v2))
        loss = normalized_mse(p1, z2) + normalized_mse(p2, z1)  # eq. 2 plus its symmetric term
        return loss, {"momentum": momentum_at(step, total_steps, self.momentum)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = momentum_at(step, total_steps, self.momentum)
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)

    def parts(self):
        return {"backbone": self.target_backbone, "online": self.backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "predictor": self.predictor,
                                        "target_projector": self.target_projector})}
