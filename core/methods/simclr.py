"""SimCLR (Chen et al., 2020): two views, MLP projector, NT-Xent over the batch."""
from __future__ import annotations

from core.heads import mlp
from core.losses.nt_xent import nt_xent
from core.methods.base import Method
from core.methods.registry import register


@register("simclr", family="contrastive", default_backbone="resnet18", paper="arXiv:2002.05709")
class SimCLR(Method):
    def __init__(self, backbone, views, proj_hidden_dim: int = 2048, proj_dim: int = 128, temperature: float = 0.1):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim)
        self.temperature = temperature

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return nt_xent(z1, z2, self.temperature), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
