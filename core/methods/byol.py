"""BYOL (Grill et al., 2020, arXiv:2006.07733): an online network predicts an EMA target
network's projection of another view; no negatives."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import BYOL_VIEWS, CIFAR_ASYMMETRIC_VIEWS
from core.heads import mlp
from core.losses.byol import normalized_mse
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/byol"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=1.0, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-5,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.99},
        # the paper's asymmetric pair without blur (32 px): solarisation 0.2 on the second view only
        views=CIFAR_ASYMMETRIC_VIEWS,
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 1.0, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-5)",
                 "method_options": f"{SOLO}.yaml (proj 4096 -> 256, pred 4096, base_tau 0.99 -> 1)",
                 "views": "solo-learn cifar augmentations/asymmetric.yaml"},
        notes="Target momentum starts at 0.99 (solo-learn's CIFAR value; the paper's 0.996 is for ImageNet)."),
    "large": Recipe(
        backbone="resnet50", backbone_options={"small_stem": False},
        optimizer="lars", base_lr=0.2, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1.5e-6,
        eta=0.001, clip_lr=False, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.996},
        views=BYOL_VIEWS,
        sources={"backbone": "paper sec. 3.3 (ResNet-50)",
                 "optimizer": "paper sec. 3.3 (LARS, biases and BN excluded from adaptation and decay); "
                              "deepmind-research byol optimizer eta 1e-3",
                 "base_lr": "paper sec. 3.3 (0.2 x BatchSize/256)",
                 "epochs": "paper sec. 3.3 (1000 epochs, batch 4096)",
                 "warmup_epochs": "paper sec. 3.3 (10 epochs, then cosine)",
                 "weight_decay": "paper sec. 3.3 (1.5e-6)",
                 "method_options": "paper sec. 3.3 (MLPs 4096 -> 256, predictor 4096; tau_base 0.996 -> 1)",
                 "views": "paper appendix B, table 6 (blur 1.0 / 0.1, solarise 0 / 0.2, crop 0.08-1)"},
        notes="Batch 256 instead of 4096 (one accelerator), LR by the linear rule."),
}


@register("byol", family="self-distillation", recipes=RECIPES, paper="arXiv:2006.07733")
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
        return {"backbone": self.target_backbone, "teacher": self.target_backbone, "online": self.backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "predictor": self.predictor,
                                        "target_projector": self.target_projector})}
