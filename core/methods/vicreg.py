"""VICReg (Bardes et al., 2021, arXiv:2105.04906): invariance between two views' embeddings,
with a variance hinge and a covariance penalty on each branch to prevent collapse."""
from __future__ import annotations

from core.heads import mlp
from core.losses.vicreg import vicreg_loss
from core.methods.barlow_twins import BYOL_VIEWS
from core.methods.base import Method
from core.methods.registry import register


@register("vicreg", family="redundancy_reduction", default_backbone="resnet18", views=BYOL_VIEWS,
          paper="arXiv:2105.04906", optimizer="lars", weight_decay=1e-6)
class VICReg(Method):
    """Expander: three linear layers (8192 wide in the paper), batch norm and ReLU between.
    Loss weights lambda (invariance) = mu (variance) = 25, nu (covariance) = 1."""

    def __init__(self, backbone, views, proj_hidden_dim: int = 8192, proj_dim: int = 8192,
                 inv_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.inv_weight, self.var_weight, self.cov_weight = inv_weight, var_weight, cov_weight

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return vicreg_loss(z1, z2, self.inv_weight, self.var_weight, self.cov_weight)

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
