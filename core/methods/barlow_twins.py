"""Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230): the cross-correlation of two views'
batch-normalised projections is pushed to the identity."""
from __future__ import annotations

from core.augment import CropSpec, ViewConfig
from core.heads import mlp
from core.losses.barlow_twins import barlow_twins_loss
from core.methods.base import Method
from core.methods.registry import register

# BYOL's asymmetric pair: blur 1.0 on one view; blur 0.1 and solarisation 0.2 on the other.
BYOL_VIEWS = ViewConfig(crops=[
    CropSpec(count=1, size=1.0, scale=(0.08, 1.0), blur_p=1.0),
    CropSpec(count=1, size=1.0, scale=(0.08, 1.0), blur_p=0.1, solarize_p=0.2),
])


@register("barlow_twins", family="redundancy_reduction", default_backbone="resnet18", views=BYOL_VIEWS,
          paper="arXiv:2103.03230", optimizer="lars", weight_decay=1.5e-6)
class BarlowTwins(Method):
    """Projector: three linear layers (8192 wide in the paper), batch norm and ReLU between."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 8192, proj_dim: int = 8192, lambd: float = 5e-3):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.lambd = lambd

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return barlow_twins_loss(z1, z2, self.lambd), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
