"""MoCo v3 (Chen, Xie & He, 2021, arXiv:2104.02057): a query encoder with projector and
predictor, a momentum key encoder, and a symmetric contrastive loss with in-batch negatives."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register

# BYOL's asymmetric augmentation, which MoCo v3 adopts (its sec. 4).
VIEWS = ViewConfig(crops=[CropSpec(count=1, scale=(0.08, 1.0), blur_p=1.0),
                          CropSpec(count=1, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2)])


@register("moco_v3", family="contrastive", default_backbone="vit_small", views=VIEWS, paper="arXiv:2104.02057")
class MoCoV3(Method):
    """The ViT recipe: a 3-layer projector and 2-layer predictor, both ending in BatchNorm, and a
    momentum rising from 0.99 to 1 on a cosine."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 4096, proj_dim: int = 256, pred_hidden_dim: int = 4096,
                 temperature: float = 0.2, momentum: float = 0.99):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim, layers=2, last_bn=True)
        self.momentum_backbone = frozen_copy(backbone)
        self.momentum_projector = frozen_copy(self.projector)
        self.temperature, self.momentum = temperature, momentum

    def contrastive(self, q, k):
        # The reference code scales the cross entropy by 2 tau (its Algorithm 1, ctr()).
        return 2 * self.temperature * info_nce(q, k, temperature=self.temperature)

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        q1 = self.predictor(self.projector(self.backbone(v1)))
        q2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(v1))
            k2 = self.momentum_projector(self.momentum_backbone(v2))
        loss = self.contrastive(q1, k2) + self.contrastive(q2, k1)
        return loss, {"momentum": momentum_at(step, total_steps, self.momentum)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = momentum_at(step, total_steps, self.momentum)
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)

    def parts(self):
        # Downstream, MoCo v3 uses the base (query) encoder, as its conversion script does.
        return {"backbone": self.backbone, "momentum": self.momentum_backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "predictor": self.predictor,
                                        "momentum_projector": self.momentum_projector})}
