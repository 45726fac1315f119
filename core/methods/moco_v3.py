"""MoCo v3 (Chen, Xie & He, 2021, arXiv:2104.02057): a query encoder with projector and
predictor, a momentum key encoder, and a symmetric contrastive loss with in-batch negatives."""
from __future__ import annotations

import torch
from torch import nn

from core.augment import BYOL_VIEWS, CIFAR_ASYMMETRIC_VIEWS
from core.heads import mlp
from core.losses.infonce import info_nce
from core.methods.base import Method
from core.methods.momentum import ema_update, frozen_copy, momentum_at
from core.methods.registry import register
from core.methods.recipe import Recipe


SOLO = "solo-learn scripts/pretrain/cifar/mocov3"
RECIPES = {
    "small": Recipe(
        backbone="resnet18", backbone_options={"small_stem": True},
        optimizer="lars", base_lr=0.3, batch_size=256, epochs=1000, warmup_epochs=10, weight_decay=1e-6,
        eta=0.02, clip_lr=True, exclude_bias_n_norm=True,
        method_options={"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "temperature": 0.2,
                        "momentum": 0.99},
        # BYOL's asymmetric pair without blur (32 px): solarisation 0.2 on the second view only
        views=CIFAR_ASYMMETRIC_VIEWS,
        sources={"backbone": f"{SOLO}.yaml (resnet18, CIFAR stem)",
                 "optimizer": f"{SOLO}.yaml (lars, eta 0.02, clip_lr, exclude_bias_n_norm)",
                 "base_lr": f"{SOLO}.yaml (lr 0.3, scaled by batch/256)", "batch_size": f"{SOLO}.yaml",
                 "epochs": f"{SOLO}.yaml (max_epochs 1000)", "warmup_epochs": "solo-learn warmup_cosine default (10)",
                 "weight_decay": f"{SOLO}.yaml (1e-6)",
                 "method_options": f"{SOLO}.yaml (proj 4096 -> 256, pred 4096, temperature 0.2, tau 0.99 -> 1)",
                 "views": "solo-learn cifar augmentations/asymmetric.yaml"},
        notes="solo-learn's CIFAR MoCo v3 is a ResNet-18, not a ViT; followed here. Its ResNet projector has 2 "
              "layers (as the MoCo v3 code's MoCo_ResNet); this class always builds the ViT's 3-layer one. The "
              "older mocov3.sh used blur 1.0/0.1, crops of 20-100 % and saturation 0.4; the yaml is followed."),
    "large": Recipe(
        backbone="vit_small", backbone_options={"patch_size": 16},
        optimizer="adamw", base_lr=1.5e-4, batch_size=256, epochs=300, warmup_epochs=40, weight_decay=0.1,
        betas=(0.9, 0.999),
        method_options={"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "temperature": 0.2,
                        "momentum": 0.99},
        views=BYOL_VIEWS,
        sources={"backbone": "facebookresearch/moco-v3 CONFIG.md (ViT-Small, patch 16)",
                 "optimizer": "moco-v3 CONFIG.md (--optimizer=adamw); torch AdamW default betas",
                 "base_lr": "moco-v3 CONFIG.md (--lr=1.5e-4; main_moco.py: lr x batch/256)",
                 "epochs": "moco-v3 CONFIG.md (--epochs=300)",
                 "warmup_epochs": "moco-v3 CONFIG.md (--warmup-epochs=40)",
                 "weight_decay": "moco-v3 CONFIG.md (--weight-decay=.1)",
                 "method_options": "moco-v3 main_moco.py (--moco-dim 256, --moco-mlp-dim 4096, --moco-m 0.99 with "
                                   "--moco-m-cos, --moco-t .2)",
                 "views": "moco-v3 main_moco.py augmentation1/2 (BYOL's: blur 1.0 / 0.1 + solarise 0.2, crop 0.08-1)"},
        notes="Batch 256 instead of 4096 (1024 in the reference's one-node setup), LR by the linear rule. The "
              "patch embedding is trained (the reference freezes its random init, --stop-grad-conv1)."),
}


@register("moco_v3", family="contrastive", recipes=RECIPES, paper="arXiv:2104.02057")
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
        return {"backbone": self.backbone, "teacher": self.momentum_backbone,
                "heads": nn.ModuleDict({"projector": self.projector, "predictor": self.predictor,
                                        "momentum_projector": self.momentum_projector})}
