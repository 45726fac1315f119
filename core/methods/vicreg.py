"""VICReg (Bardes et al., 2021, arXiv:2105.04906): invariance between two views' embeddings,
with a variance hinge and a covariance penalty on each branch to prevent collapse."""
from __future__ import annotations

from core.augment import BYOL_VIEWS, CropSpec, ViewConfig
from core.heads import mlp
from core.losses.vicreg import vicreg_loss
from core.methods.base import Method
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/vicreg"
OFFICIAL = "facebookresearch/vicreg main_vicreg.py"
WEIGHTS = {"inv_weight": 25.0, "var_weight": 25.0, "cov_weight": 1.0}
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-4,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 2048, **WEIGHTS, "sum_branch_variance": True},
        # two identically distributed views: crops of 20-100 %, solarisation 0.1, no blur at 32 px
        views=ViewConfig(crops=[CropSpec(count=2, scale=(0.2, 1.0), solarize_p=0.1)], jitter_p=0.8,
                         brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, grayscale_p=0.2),
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.3, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-4)",
                 "method_options": f"{SOLO}.yaml (proj 2048-2048-2048, sim/var/cov weights 25/25/1); solo-learn "
                                   "losses/vicreg.py variance_loss (the two branches' terms added)",
                 "views": f"{SOLO}.yaml augmentations (crop 0.2-1, jitter 0.4/0.4/0.2/0.1 p 0.8, grey 0.2, "
                          "blur 0, solarisation 0.1, flip 0.5)"},
        notes="Follows solo-learn's CIFAR recipe, which differs from the paper's ImageNet one in LR, weight decay, "
              "LARS eta 0.02 with clip_lr, expander width 2048 and views (crops of 20-100 %, no blur)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.2, batch_size=256, epochs=1000, warmup_epochs=10, final_lr=2e-4,
        weight_decay=1e-6, eta=0.001, clip_lr=False, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 8192, "proj_dim": 8192, **WEIGHTS},
        views=BYOL_VIEWS,
        sources={"backbone": f"{OFFICIAL} --arch resnet50",
                 "optimizer": f"{OFFICIAL} LARS (eta 0.001, no clipping; biases and BN excluded from decay and "
                              "adaptation)",
                 "base_lr": "facebookresearch/vicreg README (1000 epochs: --base-lr 0.2), x batch/256",
                 "batch_size": "256 here; the README's 1000-epoch run uses 2048",
                 "epochs": "facebookresearch/vicreg README (--epochs 1000)",
                 "warmup_epochs": f"{OFFICIAL} adjust_learning_rate (10)",
                 "final_lr": f"{OFFICIAL} adjust_learning_rate (end_lr = 0.001 x peak)",
                 "weight_decay": f"{OFFICIAL} --wd 1e-6",
                 "method_options": f"{OFFICIAL} --mlp 8192-8192-8192, --sim/std/cov-coeff 25/25/1",
                 "views": "facebookresearch/vicreg augmentations.py (BYOL's pair: blur 1.0 / 0.1, solarisation "
                          "0 / 0.2, crop 0.08-1)"},
        notes="Batch 256 instead of 2048 (one accelerator); the LR follows the linear rule and the final LR keeps "
              "the code's 0.001 x peak."),
}


@register("vicreg", family="redundancy-reduction", recipes=RECIPES, paper="arXiv:2105.04906")
class VICReg(Method):
    """Expander: three linear layers (8192 wide in the paper), batch norm and ReLU between.
    Loss weights lambda (invariance) = mu (variance) = 25, nu (covariance) = 1.
    `sum_branch_variance` adds the two branches' variance terms (solo-learn) instead of
    averaging them (the official code)."""
    bf16_params_ok = True  # no EMA target, no state changed outside the optimiser (Method)

    def __init__(self, backbone, views, proj_hidden_dim: int = 8192, proj_dim: int = 8192,
                 inv_weight: float = 25.0, var_weight: float = 25.0, cov_weight: float = 1.0,
                 sum_branch_variance: bool = False):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.inv_weight, self.var_weight, self.cov_weight = inv_weight, var_weight, cov_weight
        self.sum_branch_variance = sum_branch_variance

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return vicreg_loss(z1, z2, self.inv_weight, self.var_weight, self.cov_weight, self.sum_branch_variance)

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
