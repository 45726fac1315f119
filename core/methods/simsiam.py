"""SimSiam (Chen & He, 2020, arXiv:2011.10566): a Siamese encoder whose predictor matches the
other view's projection under a stop-gradient; no negatives, no momentum encoder."""
from __future__ import annotations

from torch import nn

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.simsiam import negative_cosine
from core.methods.base import Method
from core.methods.registry import register

# The paper's augmentation (its sec. 4.1, from MoCo v2): blur with p=0.5.
VIEWS = ViewConfig(crops=[CropSpec(count=2, scale=(0.2, 1.0), blur_p=0.5)], brightness=0.4, contrast=0.4,
                   saturation=0.4, hue=0.1)


@register("simsiam", family="distillation", default_backbone="resnet18", views=VIEWS, paper="arXiv:2011.10566")
class SimSiam(Method):
    """A 3-layer projector ending in BatchNorm and a bottleneck predictor (2048-512-2048)."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 2048, pred_hidden_dim: int = 512):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp(proj_dim, pred_hidden_dim, proj_dim)

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2  # eq. 2
        return loss, {}

    def parts(self):
        return {"backbone": self.backbone, "heads": nn.ModuleDict({"projector": self.projector,
                                                                   "predictor": self.predictor})}
