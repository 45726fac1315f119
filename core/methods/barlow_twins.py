"""Barlow Twins (Zbontar et al., 2021, arXiv:2103.03230): the cross-correlation of two views'
batch-normalised projections is pushed to the identity."""
from __future__ import annotations

from core.augment import BYOL_VIEWS, CIFAR_ASYMMETRIC_VIEWS
from core.heads import mlp
from core.losses.barlow_twins import barlow_twins_loss
from core.methods.base import Method
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/barlow"
OFFICIAL = "facebookresearch/barlowtwins main.py"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-4,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 2048, "proj_dim": 2048, "lambd": 0.0051, "scale_loss": 0.1},
        # solo-learn's asymmetric CIFAR pair: solarisation 0.2 on the second view only, no blur at 32 px
        views=CIFAR_ASYMMETRIC_VIEWS,
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.3, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-4)",
                 "method_options": f"{SOLO}.yaml (proj 2048-2048-2048, scale_loss 0.1); solo-learn "
                                   "barlow_twins.py lamb 0.0051",
                 "views": "solo-learn cifar augmentations/asymmetric.yaml (crop 0.08-1, jitter 0.4/0.4/0.2/0.1 "
                          f"p 0.8, grey 0.2, blur 0, solarisation 0 / 0.2); {SOLO}.sh gaussian_prob 0.0 0.0"},
        notes="As solo-learn's CIFAR run: the loss is scaled by 0.1 (scale_loss), which under LARS sets the "
              "step of the biases and norms (plain momentum SGD) and the balance between gradient and decay."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.2, batch_size=256, epochs=1000, warmup_epochs=10, final_lr=2e-4,
        weight_decay=1.5e-6, eta=0.001, clip_lr=False, exclude_bias_n_norm=True,
        lr_groups={"biases_and_norms": {"lr_scale": 0.0048 / 0.2}},
        method_options={"proj_hidden_dim": 8192, "proj_dim": 8192, "lambd": 0.0051},
        views=BYOL_VIEWS,
        sources={"backbone": f"{OFFICIAL} (torchvision resnet50)",
                 "optimizer": f"{OFFICIAL} LARS (eta 0.001, no clipping; biases and BN excluded from decay and "
                              "adaptation)",
                 "base_lr": f"{OFFICIAL} --learning-rate-weights 0.2, x batch/256",
                 "batch_size": "256 here; the paper's is 2048 (sec. 4)",
                 "epochs": f"{OFFICIAL} --epochs 1000", "warmup_epochs": f"{OFFICIAL} adjust_learning_rate (10)",
                 "final_lr": f"{OFFICIAL} adjust_learning_rate (end_lr = 0.001 x peak)",
                 "weight_decay": "paper sec. 4 (1.5e-6)",
                 "lr_groups": f"{OFFICIAL} --learning-rate-biases 0.0048 vs --learning-rate-weights 0.2: every "
                              "1-D parameter (param.ndim == 1) at 0.024x the weights' LR, warm-up included",
                 "method_options": f"{OFFICIAL} --projector 8192-8192-8192, --lambd 0.0051",
                 "views": f"{OFFICIAL} Transform (BYOL's pair: blur 1.0 / 0.1, solarisation 0 / 0.2, crop 0.08-1)"},
        notes="Batch 256 instead of the paper's 2048 (one accelerator); the LR follows the linear rule and the "
              "final LR keeps the code's 0.001 x peak. Biases and BN take the code's 42x smaller LR (0.0048 x "
              "batch/256) with plain momentum SGD. Weight decay is the paper's 1.5e-6 (the "
              "code's default is 1e-6)."),
}


@register("barlow_twins", family="redundancy-reduction", recipes=RECIPES, paper="arXiv:2103.03230")
class BarlowTwins(Method):
    """Projector: three linear layers (8192 wide in the paper), batch norm and ReLU between.
    `scale_loss` multiplies the loss (solo-learn's CIFAR recipe uses 0.1; 1 is the paper's eq. 1)."""
    bf16_params_ok = True  # no EMA target, no state changed outside the optimiser (Method)

    def __init__(self, backbone, views, proj_hidden_dim: int = 8192, proj_dim: int = 8192, lambd: float = 5e-3,
                 scale_loss: float = 1.0):
        super().__init__(backbone, views)
        self.projector = mlp(backbone.feature_dim, proj_hidden_dim, proj_dim, layers=3)
        self.lambd, self.scale_loss = lambd, scale_loss

    def training_step(self, images, gen, step, total_steps):
        v1, v2 = self.views(images, gen)[:2]
        z1, z2 = self.projector(self.backbone(v1)), self.projector(self.backbone(v2))
        return self.scale_loss * barlow_twins_loss(z1, z2, self.lambd), {}

    def parts(self):
        return {"backbone": self.backbone, "heads": self.projector}
